"""The report folder of a run: a self-contained HTML page with plots, plus CSV, Parquet and JSON files.

The folder is built in a hidden temporary sibling and renamed into place only when every file is
written, so an interrupted run never leaves a folder that looks complete.

trails.html holds the audit trail (what ``hflite explain <id>`` prints) of every decision that opened
or closed a trade; the trades table links each trade's entry and exit decisions to it.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Collection
from dataclasses import replace
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from hflite.analytics.metrics import (
    _as_utc_series,
    _asof,
    _utc_index,
    benchmark_metrics,
    drawdown,
    monthly_returns,
    run_metrics,
)
from hflite.analytics.summary import Kind, benchmark_last_bar, format_metric
from hflite.engine.result import (
    CHECK_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    RISK_EVENT_COLUMNS,
    RISK_LIMIT_COLUMNS,
    RISK_SPAN_COLUMNS,
    TRADE_COLUMNS,
    VERDICT_COLUMNS,
    RunResult,
)

#: Section titles of report.html, in page order.
SECTIONS = (
    "Run",
    "Performance",
    "Equity",
    "Drawdown",
    "Monthly returns",
    "Prices and fills",
    "Exposure",
    "AI",  # only for runs of the ai_ensemble strategy
    "LLM",  # only for runs with [llm] on
    "Risk",
    "Trades",
    "Configuration",
)
#: Files of a report folder.
REPORT_FILES = (
    "report.html",
    "trails.html",
    "trades.csv",
    "orders.csv",
    "fills.csv",
    "verdicts.csv",
    "risk_checks.csv",
    "risk_events.csv",
    "risk_spans.csv",
    "risk_limits.csv",
    "equity.parquet",
    "metrics.json",
    "config.json",
)


class ReportError(OSError):
    """The report folder could not be written (the message names the folder and the OS's reason)."""


_MAX_CURVE_POINTS = 5000
_PRICE_POINT_BUDGET = 100_000  # shared by all symbols' price lines
_MAX_PRICE_POINTS = 5000
_MIN_PRICE_POINTS = 500
_MAX_MARKERS = 2000  # per symbol and side
_MAX_TRADE_ROWS = 200
_MAX_CUT_ROWS = 10
_MAX_SPAN_ROWS = 50
_MAX_EVENT_ROWS = 50
_MAX_TRIP_ROWS = 30
_MAX_SPAN_SHAPES = 300

#: Restriction kinds of ``RunResult.risk_spans``, in report order, with a label and a plot colour.
SPAN_KINDS: dict[str, tuple[str, str]] = {
    "halted": ("Halted (drawdown)", "#cf222e"),
    "paused": ("Paused (human)", "#bf8700"),
    "killed": ("Killed (human)", "#57606a"),
    "daily_loss": ("Daily loss lock", "#fb8f44"),
    "weekly_loss": ("Weekly loss lock", "#e16f24"),
    "monthly_loss": ("Monthly loss lock", "#bc4c00"),
    "protection": ("Protection (every symbol)", "#8250df"),
}

_PERFORMANCE_ROWS: tuple[tuple[str, str, Kind], ...] = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility", "volatility", "pct"),
    ("Sharpe", "sharpe", "ratio"),
    ("Sortino", "sortino", "ratio"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Calmar", "calmar", "ratio"),
    ("Max DD duration (days)", "max_drawdown_duration_days", "days"),
    ("VaR 95% (daily)", "var_95", "pct"),
    ("CVaR 95% (daily)", "cvar_95", "pct"),
    ("Final equity (USD)", "final_equity", "usd"),
)
_TRADING_ROWS: tuple[tuple[str, str, Kind], ...] = (
    ("Closed trades", "trades", "count"),
    ("Open trades (at end)", "open_trades", "count"),
    ("Hit rate", "hit_rate", "pct"),
    ("Profit factor", "profit_factor", "ratio"),
    ("Avg trade (USD, net)", "avg_trade", "usd"),
    ("Avg trade return", "avg_trade_pct", "pct"),
    ("Fees paid (USD)", "fees_usd", "usd"),
    ("Est. exit fees of open trades (USD, not deducted)", "open_exit_fee_est_usd", "usd"),
    ("Information ratio (vs first benchmark)", "information_ratio", "ratio"),
    ("Turnover (x / year)", "turnover", "ratio"),
    ("Exposure (share of time in market)", "exposure", "pct"),
    ("Avg gross exposure / equity", "avg_gross_exposure", "ratio"),
    ("Years", "years", "ratio"),
    ("Periods per year", "periods_per_year", "ratio"),
)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 color:#1f2328;background:#f6f8fa;font-size:14px;line-height:1.45}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
header{background:#24292f;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px}
nav{margin-top:6px;font-size:13px}
nav a{color:#c9d1d9;margin-right:12px;text-decoration:none}
section{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px}
h3{font-size:14px;margin:12px 0 6px;color:#57606a}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{border-bottom:1px solid #eaeef2;padding:4px 10px;text-align:right;white-space:nowrap}
th{background:#f6f8fa;font-weight:600}
td:first-child,th:first-child{text-align:left}
.scroll{overflow-x:auto;max-width:100%}
td.wrap,th.wrap{white-space:normal;text-align:left;min-width:14em;overflow-wrap:break-word}
.fit table{table-layout:auto;width:100%}
.fit th,.fit td{padding:4px 6px;vertical-align:top}
.fit td.wrap{min-width:12em}
.note{color:#57606a;font-size:12.5px}
.warn{color:#9a6700}
pre{background:#f6f8fa;padding:10px;border-radius:6px;overflow-x:auto;font-size:12px}
"""

_TEMPLATE = go.layout.Template(
    layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "colorway": ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"],
        "xaxis": {"gridcolor": "#eaeef2", "linecolor": "#d0d7de", "zeroline": False},
        "yaxis": {"gridcolor": "#eaeef2", "linecolor": "#d0d7de", "zerolinecolor": "#d0d7de"},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "hovermode": "x unified",
    }
)


# ------------------------------------------------------------------------------------- the folder


def write_report(result: RunResult, out_dir: Path, metrics: dict | None = None) -> Path:
    """Write the report folder ``out_dir`` (see :data:`REPORT_FILES`) and return the path of report.html.

    ``metrics`` defaults to :func:`~hflite.analytics.metrics.run_metrics`. Files go to a temporary
    sibling first; an existing ``out_dir`` is replaced only after everything succeeded. A failure of the
    file system (the folder deleted meanwhile, a full disk, no permission) raises :class:`ReportError`.
    """
    out_dir = Path(out_dir)

    def fill(tmp: Path) -> None:
        strategy = run_metrics(result) if metrics is None else dict(metrics)
        benches = benchmark_metrics(result)
        _write_tables(result, tmp)
        _write_json(
            tmp / "metrics.json",
            {
                "run_id": result.run_id,
                "strategy_name": result.strategy,
                "metrics": strategy,
                "benchmarks": benches,
                "stats": result.stats,
            },
        )
        _write_json(tmp / "config.json", result.config)
        trails = trail_ids(result)
        (tmp / "trails.html").write_text(trails_html(result, tmp, trails, out_dir), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(result, strategy, benches, trails), encoding="utf-8")

    write_folder(out_dir, fill)
    return out_dir / "report.html"


def write_folder(out_dir: Path, fill: Callable[[Path], None]) -> Path:
    """Write a report folder atomically: ``fill(tmp)`` writes the files into a temporary sibling, which
    then replaces ``out_dir`` (an existing one is set aside and restored on failure). A file-system
    failure is a :class:`ReportError` naming the folder; nothing half-written is left behind."""
    out_dir = Path(out_dir)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise _report_error(out_dir, exc) from exc
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the finished report is an ordinary folder
        fill(tmp)
        _move_into_place(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _report_error(out_dir, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _report_error(out_dir: Path, exc: OSError) -> ReportError:
    """``exc`` as a :class:`ReportError`: the folder, the OS's reason and the file it concerned."""
    if isinstance(exc, ReportError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        name = Path(exc.filename)
        reason += f" ({name.parent.name}/{name.name}" if name.parent.name.startswith(".") else f" ({name}"
        reason += "; was the folder deleted meanwhile?)" if exc.errno == errno.ENOENT else ")"
    return ReportError(f"cannot write the report folder {out_dir}: {reason}")


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``; an existing ``out_dir`` is set aside first and restored on failure."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _with_columns(frame: pd.DataFrame | None, columns: list[str]) -> pd.DataFrame:
    """``frame`` with the documented ``columns`` first (missing ones empty), any extra columns after."""
    frame = pd.DataFrame() if frame is None else frame
    extra = [c for c in frame.columns if c not in columns]
    return frame.reindex(columns=[*columns, *extra])


def equity_frame(result: RunResult) -> pd.DataFrame:
    """The run's curves on its timeline: equity, cash, gross/net exposure and ``benchmark_<name>``."""
    idx = _utc_index(result.equity.index)
    frame = pd.DataFrame({"equity": result.equity.to_numpy(dtype="float64")}, index=idx)
    for name in ("cash", "gross_exposure", "net_exposure"):
        frame[name] = _asof(getattr(result, name), idx).to_numpy()
    for name, curve in result.benchmarks.items():
        frame[f"benchmark_{name}"] = _asof(curve, idx, before=result.initial_cash).to_numpy()
    frame.index.name = "ts"
    return frame


def _write_tables(result: RunResult, folder: Path) -> None:
    _with_columns(result.trades, TRADE_COLUMNS).to_csv(folder / "trades.csv", index=False)
    _with_columns(result.orders, ORDER_COLUMNS).to_csv(folder / "orders.csv", index=False)
    _with_columns(result.fills, FILL_COLUMNS).to_csv(folder / "fills.csv", index=False)
    _with_columns(result.verdicts, VERDICT_COLUMNS).to_csv(folder / "verdicts.csv", index=False)
    _with_columns(result.risk_checks, CHECK_COLUMNS).to_csv(folder / "risk_checks.csv", index=False)
    _with_columns(result.risk_events, RISK_EVENT_COLUMNS).to_csv(folder / "risk_events.csv", index=False)
    _with_columns(result.risk_spans, RISK_SPAN_COLUMNS).to_csv(folder / "risk_spans.csv", index=False)
    _with_columns(result.risk_limits, RISK_LIMIT_COLUMNS).to_csv(folder / "risk_limits.csv", index=False)
    equity_frame(result).to_parquet(folder / "equity.parquet")
    if result.ai is not None:
        from hflite.analytics.report_ai import write_ai_tables

        write_ai_tables(result.ai, folder)
    if result.llm is not None:
        from hflite.analytics.report_llm import write_llm_tables

        write_llm_tables(result.llm, folder)


def _ai_html(result: RunResult) -> str:
    from hflite.analytics.report_ai import ai_html

    return ai_html(result.ai)


def _llm_html(result: RunResult, trails: Collection[str]) -> str:
    from hflite.analytics.report_llm import llm_html

    return llm_html(result.llm, trails)


def _json_safe(value: Any) -> Any:
    """JSON-ready copy: NaN -> null, +-inf -> "inf"/"-inf", numpy scalars -> Python, others -> str."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


# -------------------------------------------------------------------------------------- the page


def render_html(
    result: RunResult, metrics: dict, bench_metrics: dict[str, dict], trails: Collection[str] | None = None
) -> str:
    """The whole self-contained page (plotly.js inlined once in the head). Decision ids in ``trails``
    (default :func:`trail_ids`, what :func:`write_report` writes to trails.html) link to their trail."""
    linked = set(trail_ids(result) if trails is None else trails)
    parts = {
        "Run": lambda: _run_html(result),
        "Performance": lambda: _performance_html(
            metrics, bench_metrics, [benchmark_last_bar(result, name) for name in bench_metrics]
        ),
        "Equity": lambda: _figure_html(_equity_figure(result), "equity"),
        "Drawdown": lambda: _figure_html(_drawdown_figure(result), "drawdown"),
        "Monthly returns": lambda: _monthly_html(result),
        "Prices and fills": lambda: _prices_html(result),
        "Exposure": lambda: _figure_html(_exposure_figure(result), "exposure"),
        "AI": lambda: _ai_html(result),
        "LLM": lambda: _llm_html(result, linked),
        "Risk": lambda: _risk_html(result),
        "Trades": lambda: _trades_html(result, linked),
        "Configuration": lambda: _config_html(result.config),
    }
    optional = {"AI": result.ai is not None, "LLM": result.llm is not None}
    titles = [t for t in SECTIONS if optional.get(t, True)]
    nav = "".join(f'<a href="#{_anchor(t)}">{escape(t)}</a>' for t in titles)
    body = [_section(t, parts[t]()) for t in titles]
    title = escape(f"{result.strategy} · {result.run_id}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>HedgeFund-Lite report: {title}</h1><nav>{nav}</nav></header>"
        f"<main>{''.join(body)}</main></body></html>\n"
    )


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def _section(title: str, inner: str) -> str:
    return f'<section id="{_anchor(title)}"><h2>{escape(title)}</h2>{inner}</section>'


def _table(
    header: list[str],
    rows: list[list[str]],
    html_columns: Collection[int] = (),
    left: Collection[int] = (0,),
    wrap: Collection[int] = (),
    fit: bool = False,
) -> str:
    """A plain HTML table of already formatted (unescaped) cells. Cells of ``html_columns`` are HTML
    already (the caller escaped them); columns in ``left`` align left (the first always does) and those
    in ``wrap`` wrap long text (left-aligned). A ``fit`` table takes the card's width with tighter cells;
    any table wider than its card scrolls inside it, never the page."""

    def attrs(i: int) -> str:
        css = ' class="wrap"' if i in wrap else ""
        return css + (' style="text-align:left;"' if i in left and i else "")

    styles = [attrs(i) for i in range(max([len(header), *(len(r) for r in rows)]))]
    head = "".join(f"<th{styles[i]}>{escape(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>"
        + "".join(f"<td{styles[i]}>{c if i in html_columns else escape(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    box = "scroll fit" if fit else "scroll"
    return f'<div class="{box}"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _ts(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{pd.Timestamp(value):%Y-%m-%d %H:%M} UTC"


def _run_html(result: RunResult) -> str:
    rows = [
        ["Run id", result.run_id],
        ["Strategy", result.strategy],
        ["Symbols", ", ".join(result.symbols)],
        ["Window", f"{_ts(result.start)} → {_ts(result.end)}"],
        ["Initial cash (USD)", f"{result.initial_cash:,.2f}"],
        [
            "Benchmarks",
            ", ".join(f"{n} (last bar {benchmark_last_bar(result, n)})" for n in result.benchmarks) or "none",
        ],
    ]
    if result.halted_at is not None:
        rows.append(["Trading halted at", _ts(result.halted_at)])
    rows += [
        [f"Engine: {k}", f"{v:,.6g}" if isinstance(v, int | float) else str(v)]
        for k, v in result.stats.items()
    ]
    parts = [_table(["Field", "Value"], rows), "<h3>Data versions</h3>"]
    if result.data_versions:
        versions = [[k, v] for k, v in sorted(result.data_versions.items())]
        parts.append(_table(["Data set", "Version"], versions))
    else:
        parts.append('<p class="note">No data versions recorded.</p>')
    parts.append("<h3>Warnings</h3>")
    warnings = list(result.warnings)
    if result.halted_at is not None:
        warnings.append(f"Trading was halted at {_ts(result.halted_at)}.")
    if warnings:
        parts.append("<ul>" + "".join(f'<li class="warn">{escape(w)}</li>' for w in warnings) + "</ul>")
    else:
        parts.append('<p class="note">None.</p>')
    return "".join(parts)


def _performance_html(
    metrics: dict, bench_metrics: dict[str, dict], last_bars: list[str] | None = None
) -> str:
    header = ["Metric", "Strategy", *bench_metrics]
    rows = [
        [
            label,
            format_metric(metrics.get(key), kind),
            *(format_metric(bm.get(key), kind) for bm in bench_metrics.values()),
        ]
        for label, key, kind in _PERFORMANCE_ROWS
    ]
    if bench_metrics and last_bars is not None:
        rows.append(["Last bar", "—", *last_bars])
    trading = [[label, format_metric(metrics.get(key), kind)] for label, key, kind in _TRADING_ROWS]
    note = (
        '<p class="note">Benchmarks are buy-and-hold on their own calendar, whatever the run trades: from '
        "their first daily close on or after the run's start to their last bar on or before its end (the "
        "last bar row), same starting cash, no fees. Open positions at the last bar are marked to market "
        "at the last close and included in equity and total return; their estimated exit fee is shown "
        "separately and not deducted. Hit rate, profit factor and average trade use closed trades only, "
        "net of fees.</p>"
    )
    return (
        _table(header, rows) + "<h3>Trading statistics</h3>" + _table(["Metric", "Strategy"], trading) + note
    )


# ------------------------------------------------------------------------------------ the risk section


def _risk_html(result: RunResult) -> str:
    """The audit in one section: limits, verdicts by status and by rule, time under restrictions,
    risk events, circuit breakers and the largest cuts (every row is in the CSV files)."""
    v = _with_columns(result.verdicts, VERDICT_COLUMNS)
    spans = _spans(result)
    events = _with_columns(result.risk_events, RISK_EVENT_COLUMNS)
    return "".join(
        [
            _limits_html(result.risk_limits),
            "<h3>Verdicts by status</h3>",
            _status_html(v),
            "<h3>Rejections and cuts by rule</h3>",
            _rules_html(v),
            "<h3>Time under restrictions</h3>",
            _time_html(result, spans),
            _spans_plot_html(result, spans),
            "<h3>Risk events</h3>",
            _events_html(events),
            "<h3>Circuit breakers</h3>",
            _breakers_html(events),
            "<h3>Largest cuts</h3>",
            _cuts_html(v),
        ]
    )


def _limits_html(limits: pd.DataFrame | None) -> str:
    frame = _with_columns(limits, RISK_LIMIT_COLUMNS)
    if frame.empty:
        return '<p class="note">No risk limits recorded.</p>'
    rows = [[str(name), str(value)] for name, value in zip(frame["limit"], frame["value"], strict=True)]
    return (
        f"<details><summary>Every limit of this run ({len(rows)}; also in risk_limits.csv)</summary>"
        f"{_table(['Limit', 'Value'], rows)}</details>"
    )


def _status_html(v: pd.DataFrame) -> str:
    if v.empty:
        return '<p class="note">No risk verdicts recorded.</p>'
    kind = v["kind"].fillna("").astype(str)
    rows = []
    for status in ("approved", "resized", "rejected", *sorted(set(v["status"].astype(str)) - _STATUSES)):
        mask = v["status"].astype(str) == status
        entries, exits = int((mask & (kind == "entry")).sum()), int((mask & (kind == "exit")).sum())
        rows.append([status, f"{entries:,}", f"{exits:,}", f"{int(mask.sum()):,}"])
    note = (
        '<p class="note">Every intent gets a verdict. Exits are always approved and never enlarged; '
        "entries are sized at the configured risk, then cut or rejected by the rules below. "
        "verdicts.csv holds every verdict, risk_checks.csv every check with its value and limit "
        "(<code>hflite explain &lt;intent-id&gt;</code> shows one).</p>"
    )
    return _table(["Status", "Entries", "Exits", "All"], rows) + note


_STATUSES = {"approved", "resized", "rejected"}


def rule_counts(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per rule: how many verdicts it rejected and how many it cut (a verdict counts once per rule).

    Columns ``rejected``, ``resized``, ``total``; sorted by total, then rule name."""
    v = _with_columns(verdicts, VERDICT_COLUMNS)
    v = v[v["status"].isin(["rejected", "resized"])]
    rules = v["rules"].fillna("").astype(str).str.split(";")
    pairs = [
        (rule or "(not recorded)", status)
        for status, names in zip(v["status"], rules, strict=True)
        for rule in dict.fromkeys(names)
    ]
    frame = pd.DataFrame(pairs, columns=["rule", "status"])
    table = pd.crosstab(frame["rule"], frame["status"]).reindex(columns=["rejected", "resized"], fill_value=0)
    table["total"] = table.sum(axis=1)
    table = table.reset_index().sort_values(["total", "rule"], ascending=[False, True], kind="stable")
    return table.set_index("rule")[["rejected", "resized", "total"]].astype(int)


def _rules_html(v: pd.DataFrame) -> str:
    counts = rule_counts(v)
    if counts.empty:
        return '<p class="note">No intent was rejected or cut.</p>'
    rows = [[str(rule), f"{r.rejected:,}", f"{r.resized:,}", f"{r.total:,}"] for rule, r in counts.iterrows()]
    note = (
        '<p class="note">A verdict counts once under each rule that rejected or cut it, so a column can add '
        "up to more than the verdicts.</p>"
    )
    return _table(["Rule", "Rejected", "Cut (resized)", "Total"], rows) + note


def _spans(result: RunResult) -> pd.DataFrame:
    """``risk_spans`` with parsed times and ``until``: the end, or the run's last point for open spans."""
    s = _with_columns(result.risk_spans, RISK_SPAN_COLUMNS).copy()
    s["start_ts"] = pd.to_datetime(s["start_ts"], utc=True)
    s["end_ts"] = pd.to_datetime(s["end_ts"], utc=True)
    last = _utc_index(result.equity.index)[-1] if len(result.equity) else pd.NaT
    s["until"] = s["end_ts"].fillna(last)
    return s


def _union_days(spans: pd.DataFrame) -> float:
    """Days covered by the spans, overlaps counted once."""
    total, cur_a, cur_b = pd.Timedelta(0), None, None
    for a, b in sorted(zip(spans["start_ts"], spans["until"], strict=True)):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        elif b > cur_b:
            cur_b = b
    if cur_b is not None:
        total += cur_b - cur_a
    return total / pd.Timedelta(days=1)


def time_under_restrictions(result: RunResult) -> pd.DataFrame:
    """Per restriction kind: spans, days (overlaps once), share of the run, and whether still in force."""
    spans = _spans(result)
    idx = _utc_index(result.equity.index)
    run_days = (idx[-1] - idx[0]) / pd.Timedelta(days=1) if len(idx) > 1 else 0.0
    rows = []
    for kind in [*SPAN_KINDS, *sorted(set(spans["kind"].astype(str)) - set(SPAN_KINDS))]:
        of = spans[spans["kind"] == kind]
        days = _union_days(of)
        share = days / run_days if run_days > 0 else math.nan
        rows.append((kind, len(of), days, share, bool(of["end_ts"].isna().any())))
    return pd.DataFrame(rows, columns=["kind", "spans", "days", "share", "in_force_at_end"]).set_index("kind")


def _time_html(result: RunResult, spans: pd.DataFrame) -> str:
    summary = time_under_restrictions(result)
    rows = [
        [
            SPAN_KINDS.get(str(kind), (str(kind), ""))[0],
            f"{r.spans:,}",
            f"{r.days:,.1f}",
            format_metric(r.share, "pct"),
            "yes" if r.in_force_at_end else "",
        ]
        for kind, r in summary.iterrows()
    ]
    parts = [
        _table(["Restriction", "Spans", "Days", "% of run", "In force at the end"], rows),
        '<p class="note">Calendar days between timeline points; a restriction still in force at the end '
        "counts up to the run's last point. Per-symbol pauses (breakers, stop-out cooldowns, guards) "
        "are listed under risk events and circuit breakers.</p>",
    ]
    if not spans.empty:
        shown = spans.head(_MAX_SPAN_ROWS)
        span_rows = [
            [
                SPAN_KINDS.get(str(r.kind), (str(r.kind), ""))[0],
                _ts(r.start_ts),
                _ts(r.end_ts) if not pd.isna(r.end_ts) else "still in force",
                f"{float(r.days):,.1f}",
                str(r.detail),
            ]
            for r in shown.itertuples(index=False)
        ]
        parts.append(_table(["Restriction", "From", "To", "Days", "Why"], span_rows, wrap=(4,)))
        if len(spans) > len(shown):
            parts.append(
                f'<p class="note">First {len(shown)} of {len(spans)} spans; all are in risk_spans.csv.</p>'
            )
    return "".join(parts)


def _spans_plot_html(result: RunResult, spans: pd.DataFrame) -> str:
    if spans.empty or result.equity.empty:
        return ""
    return _figure_html(_restrictions_figure(result, spans), "risk-spans")


def _restrictions_figure(result: RunResult, spans: pd.DataFrame) -> go.Figure:
    """Equity with the time spent under each restriction shaded."""
    thin = _thin(equity_frame(result)["equity"], _MAX_CURVE_POINTS)
    fig = go.Figure()
    fig.add_scatter(x=_x(thin.index), y=_y(thin), name="Equity", line={"width": 1.5, "color": "#1f77b4"})
    shown: set[str] = set()
    for r in spans.head(_MAX_SPAN_SHAPES).itertuples(index=False):
        label, color = SPAN_KINDS.get(str(r.kind), (str(r.kind), "#6e7781"))
        end = r.until if r.until > r.start_ts else r.start_ts + pd.Timedelta(hours=12)
        fig.add_vrect(
            x0=f"{r.start_ts:%Y-%m-%d %H:%M}",
            x1=f"{end:%Y-%m-%d %H:%M}",
            fillcolor=color,
            opacity=0.25,
            line_width=0,
            layer="below",
            name=label,
            legendgroup=label,
            showlegend=label not in shown,
        )
        shown.add(label)
    fig.update_layout(height=320, xaxis_type="date", yaxis_title="Equity (USD)")
    return fig


def _events_html(events: pd.DataFrame) -> str:
    ev = events[~events["kind"].isin(_BREAKER_KINDS)]
    if ev.empty:
        return '<p class="note">No halt, pause, kill, loss-limit lock or protection during the run.</p>'
    symbol = ev["symbol"].fillna("").astype(str)
    kinds = ev["kind"].astype(str)
    order = [k for k in _EVENT_ORDER if k in set(kinds)] + sorted(set(kinds) - set(_EVENT_ORDER))
    by_kind = (
        pd.DataFrame({"kind": kinds, "scope": np.where(symbol == "", "account", "symbol")})
        .value_counts()
        .unstack(fill_value=0)
        .reindex(index=order, columns=["account", "symbol"], fill_value=0)
    )
    rows = [[str(k), f"{r.account:,}", f"{r.symbol:,}"] for k, r in by_kind.iterrows()]
    parts = [_table(["Event", "Account-wide", "One symbol"], rows)]
    protections = symbol[(ev["kind"] == "protection").to_numpy() & (symbol != "").to_numpy()]
    if not protections.empty:
        per = protections.value_counts().sort_index()
        parts.append(_table(["Symbol", "Protection pauses"], [[str(s), f"{n:,}"] for s, n in per.items()]))
    shown = ev.head(_MAX_EVENT_ROWS)
    parts.append(
        _table(
            ["Time", "Event", "Symbol", "Detail"],
            [
                [_ts(r.ts), str(r.kind), str(r.symbol or ""), str(r.detail)]
                for r in shown.itertuples(index=False)
            ],
            wrap=(3,),
        )
    )
    if len(ev) > len(shown):
        parts.append(
            f'<p class="note">First {len(shown)} of {len(ev)} events; all are in risk_events.csv.</p>'
        )
    return "".join(parts)


_BREAKER_KINDS = ("breaker", "market_breaker")
_EVENT_ORDER = ("halt", "pause", "resume", "kill", "close_all", "daily_loss", "weekly_loss", "monthly_loss",
                "protection")  # fmt: skip


def _breakers_html(events: pd.DataFrame) -> str:
    trips = events[events["kind"].isin(_BREAKER_KINDS)]
    if trips.empty:
        return '<p class="note">No circuit breaker tripped on the run\'s bars.</p>'
    per = (
        trips.assign(symbol=trips["symbol"].fillna("").astype(str))[["symbol", "kind"]]
        .value_counts()
        .unstack(fill_value=0)
        .reindex(columns=list(_BREAKER_KINDS), fill_value=0)
    )
    rows = [[str(s), f"{r.breaker:,}", f"{r.market_breaker:,}"] for s, r in per.iterrows()]
    shown = trips.head(_MAX_TRIP_ROWS)
    parts = [
        _table(["Symbol", "Bars tripped (symbol)", "Bars tripped (market-wide index)"], rows),
        '<p class="note">Every bar of the run on which a breaker condition held, whether or not an entry '
        "was due (a lasting condition trips on each bar); each trip pauses new entries for the configured "
        "cooldown (see the limits).</p>",
        _table(
            ["Time", "Symbol", "Breaker", "Detail"],
            [[_ts(r.ts), str(r.symbol), str(r.kind), str(r.detail)] for r in shown.itertuples(index=False)],
            wrap=(3,),
        ),
    ]
    if len(trips) > len(shown):
        parts.append(
            f'<p class="note">First {len(shown)} of {len(trips)} trips; all are in risk_events.csv.</p>'
        )
    return "".join(parts)


def largest_cuts(verdicts: pd.DataFrame, n: int = _MAX_CUT_ROWS) -> pd.DataFrame:
    """The verdicts that cut the most USD: (requested - approved) x price x fx, resized or rejected after
    sizing, largest first. ``cut_usd`` uses the verdict's FX rate (1 when not recorded)."""
    v = _with_columns(verdicts, VERDICT_COLUMNS)
    req = pd.to_numeric(v["qty_requested"], errors="coerce").abs()
    appr = pd.to_numeric(v["qty_approved"], errors="coerce").abs()
    price = pd.to_numeric(v["price"], errors="coerce")
    fx = pd.to_numeric(v["fx"], errors="coerce").fillna(1.0)
    out = v.assign(cut_qty=req - appr, cut_usd=(req - appr) * price * fx, kept=appr / req)
    out = out[(req > 0) & (appr < req) & out["status"].isin(["resized", "rejected"])]
    return out.sort_values("cut_usd", ascending=False, kind="stable", na_position="last").head(n)


def _cuts_html(v: pd.DataFrame) -> str:
    cuts = largest_cuts(v)
    if cuts.empty:
        return '<p class="note">No intent was cut.</p>'
    rows = [
        [
            _ts(r.ts),
            str(r.intent_id),
            str(r.symbol),
            str(r.status),
            f"{r.qty_requested:,.6g}",
            f"{r.qty_approved:,.6g}",
            f"{r.cut_usd:,.0f}" if r.cut_usd == r.cut_usd else "",
            f"{r.kept:.1%}",
            "; ".join(r.rules.split(";")) if isinstance(r.rules, str) else "",  # wraps between rules
            str(r.reason),
        ]
        for r in cuts.itertuples(index=False)
    ]
    note = (
        '<p class="note">Requested is the size at the configured risk before any cut; the cut in USD is '
        "(requested - approved) x the intent's price x its FX rate to USD at the decision.</p>"
    )
    return (
        _table(
            [
                "Time",
                "Intent",
                "Symbol",
                "Status",
                "Requested",
                "Approved",
                "Cut (USD)",
                "Kept",
                "Rules",
                "Reason",
            ],
            rows,
            wrap=(8, 9),
            fit=True,
        )
        + note
    )


def _trade_cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return ""
    if column.endswith("_ts"):
        return _ts(value)
    if column in {"pnl", "pnl_usd", "fees_usd", "exit_fee_est_usd"}:
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.6g}"
    return str(value)


#: Columns of the report's trades table: few and narrow, so it fits the card at 1400 px (trades.csv has all).
_TRADE_TABLE = ("Trade", "Decisions", "Symbol", "Position", "Entry (UTC)", "Exit (UTC)", "P&L USD", "Return",
                "Fees USD", "Reasons")  # fmt: skip


def _trades_html(result: RunResult, trails: Collection[str]) -> str:
    trades = result.trades
    if trades is None or trades.empty:
        return '<p class="note">No trades.</p>'
    shown = _with_columns(trades, TRADE_COLUMNS).head(_MAX_TRADE_ROWS)
    decisions = trade_decisions(result).head(len(shown))
    links = zip(decisions["entry_decision"], decisions["exit_decision"], decisions["exit_order"], strict=True)
    rows = [
        _trade_row(t, entry, exit_, order, trails)
        for t, (entry, exit_, order) in zip(shown.to_dict("records"), links, strict=True)
    ]
    note = (
        f'<p class="note">Showing the first {len(shown)} of {len(trades)} trades; all are in trades.csv, '
        "with the bars held, the P&amp;L in the quote currency and the estimated exit fee of open trades. "
        "Open trades are marked to market at the last close. Each trade's entry and exit decisions link to "
        "their audit trails in trails.html (what <code>hflite explain &lt;id&gt;</code> prints); a trade "
        "closed by a stop-loss or take-profit order leads to the entry decision that placed it.</p>"
    )
    return note + _table(
        list(_TRADE_TABLE), rows, html_columns=(1, 4, 5, 9), left=(0, 1, 2), wrap=(9,), fit=True
    )


def _trade_row(t: dict[str, Any], entry: str, exit_: str, order: str, trails: Collection[str]) -> list[str]:
    """One row of the trades table; the decisions, entry, exit and reasons cells are HTML (escaped here)."""
    still_open = str(t.get("is_open", "")).lower() in ("true", "1", "1.0")
    # on its own line: "(by its stop-loss order)" after the id would widen the column past the card
    exit_link = _decision_link(exit_, trails) + (
        "<br>" + _via(order).strip() if exit_ and exit_ == entry else ""
    )
    reasons = f"in: {escape(_trade_cell('entry_reason', t.get('entry_reason')))}"
    out = _trade_cell("exit_reason", t.get("exit_reason"))
    reasons += f"<br>out: {escape(out)}" if out else ""
    ret = _float_or_nan(t.get("return_pct"))
    return [
        _trade_cell("trade_id", t.get("trade_id")),
        _decision_link(entry, trails) + (f"<br>{exit_link}" if exit_link else ""),
        _trade_cell("symbol", t.get("symbol")),
        f"{_direction(t.get('direction'))} {_trade_cell('qty', t.get('qty'))}",
        _when_at(t.get("entry_ts"), t.get("entry_price")),
        "open" if still_open else _when_at(t.get("exit_ts"), t.get("exit_price")),
        _trade_cell("pnl_usd", t.get("pnl_usd")),
        "" if math.isnan(ret) else f"{ret:+.2f}%",
        _trade_cell("fees_usd", t.get("fees_usd")),
        reasons,
    ]


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _when_at(ts: Any, price: Any) -> str:
    """A fill time over its price, as HTML: "2018-01-04 21:00<br>124.922"."""
    when = "" if ts is None or pd.isna(ts) else f"{pd.Timestamp(ts):%Y-%m-%d %H:%M}"
    at = _trade_cell("price", price)
    return escape(when) + (f"<br>{escape(at)}" if at else "")


def _decision_link(ident: str, trails: Collection[str]) -> str:
    """A decision id as a link to its trail in trails.html (plain text when it has none)."""
    if not ident or ident not in trails:
        return escape(ident)
    return f'<a href="trails.html#{escape(quote(ident, safe=""))}">{escape(ident)}</a>'


def _via(order: str) -> str:
    """A note after an exit decision that is the entry's own: the protective order that closed the trade."""
    if not order:
        return ""
    suffix = order.rsplit("-", 1)[-1]
    what = {"sl": "its stop-loss order", "tp": "its take-profit order"}.get(suffix, f"order {order}")
    return f' <span class="note" title="{escape(order)}">(by {escape(what)})</span>'


# ------------------------------------------------------------------------------- decision trails


def _direction(value: Any) -> str:
    """A trade's direction as long/short (also from 1/-1 or buy/sell)."""
    text = str(value).strip().lower()
    if text in ("long", "buy", "1", "1.0"):
        return "long"
    if text in ("short", "sell", "-1", "-1.0"):
        return "short"
    return text


def _nanos(values: Any) -> list[int | None]:
    """Times as UTC nanoseconds (None when missing): exact, hashable keys."""
    stamps = pd.to_datetime(pd.Series(values), utc=True, errors="coerce")
    return [None if pd.isna(t) else int(t.value) for t in stamps]


def _decision_kinds(verdicts: pd.DataFrame | None) -> dict[str, str]:
    """Intent id -> entry/exit (inferred from the reason for results without ``kind``, as explain does)."""
    v = _with_columns(verdicts, VERDICT_COLUMNS)
    out: dict[str, str] = {}
    for ident, kind, reason in zip(v["intent_id"], v["kind"], v["reason"], strict=True):
        kind = "" if not isinstance(kind, str) else kind
        if not kind:
            kind = "exit" if isinstance(reason, str) and reason.startswith("exit:") else "entry"
        out.setdefault(str(ident), kind)
    return out


def _fill_decisions(
    result: RunResult,
) -> tuple[dict[tuple[str, str, int], str], dict[tuple[str, str, int], tuple[str, str]]]:
    """Which decision's fills opened and closed positions: (symbol, direction, fill time) -> the entry
    decision, and -> (the closing decision, the order that closed it). An entry decision's own order
    opens; exits and an entry's protective children (stop-loss, take-profit) close."""
    orders = _with_columns(result.orders, ORDER_COLUMNS)
    fills = _with_columns(result.fills, FILL_COLUMNS)
    opened: dict[tuple[str, str, int], str] = {}
    closed: dict[tuple[str, str, int], tuple[str, str]] = {}
    if orders.empty or fills.empty:
        return opened, closed
    kinds = _decision_kinds(result.verdicts)
    decision = {str(o): str(d) for o, d in zip(orders["order_id"], orders["decision_id"], strict=True)}
    children = {
        str(o)
        for o, p in zip(orders["order_id"], orders["parent_id"], strict=True)
        if isinstance(p, str) and p
    }
    sides = fills["side"].astype(str).str.lower()
    for order, symbol, side, ts in zip(fills["order_id"].astype(str), fills["symbol"].astype(str), sides,
                                       _nanos(fills["ts"]), strict=True):  # fmt: skip
        ident = decision.get(order, "")
        if ts is None or ident not in kinds:
            continue
        if kinds[ident] == "entry" and order not in children:
            opened.setdefault((symbol, "long" if side == "buy" else "short", ts), ident)
        else:
            closed.setdefault((symbol, "short" if side == "buy" else "long", ts), (ident, order))
    return opened, closed


def trade_decisions(result: RunResult) -> pd.DataFrame:
    """Per trade (the index of ``result.trades``): ``entry_decision`` and ``exit_decision``, the intent
    ids whose orders' fills opened and closed it, and ``exit_order``, the order that closed it ("" where
    none is recorded). Fills match trades on symbol, direction and time, as ``hflite explain`` matches
    them; a trade closed by a stop-loss or take-profit order has the entry decision that placed it as its
    exit decision."""
    trades = _with_columns(result.trades, TRADE_COLUMNS)
    opened, closed = _fill_decisions(result)
    symbols = trades["symbol"].astype(str).tolist()
    directions = [_direction(d) for d in trades["direction"]]
    entries, exits = [], []
    for sym, way, a, b in zip(symbols, directions, _nanos(trades["entry_ts"]), _nanos(trades["exit_ts"]),
                              strict=True):  # fmt: skip
        entries.append(opened.get((sym, way, a), "") if a is not None else "")
        exits.append(closed.get((sym, way, b), ("", "")) if b is not None else ("", ""))
    return pd.DataFrame(
        {
            "entry_decision": entries,
            "exit_decision": [e[0] for e in exits],
            "exit_order": [e[1] for e in exits],
        },
        index=trades.index,
        dtype=object,
    )


def trail_ids(result: RunResult) -> list[str]:
    """The decisions whose trails trails.html holds, in the verdicts' order: every decision that opened
    or closed a trade, and those the LLM section lists."""
    decisions = trade_decisions(result)
    wanted = set(decisions["entry_decision"]) | set(decisions["exit_decision"])
    if result.llm is not None:
        from hflite.analytics.report_llm import llm_trail_ids

        wanted |= set(llm_trail_ids(result.llm))
    known = _decision_kinds(result.verdicts)
    return [i for i in known if i in wanted]


_TRAILS_CSS = """
.trail{border-left:4px solid #d0d7de}
.trail:target{border-left-color:#1a7f37;box-shadow:0 0 0 2px #aceebb}
.back{font-size:12.5px}
"""


def trails_html(result: RunResult, folder: Path, ids: Collection[str], shown_as: Path | None = None) -> str:
    """trails.html: the audit trail of each decision in ``ids`` read from the report files in ``folder``
    (each CSV read once), each in a ``<section id="<intent id>">`` so ``trails.html#<id>`` opens it.
    ``shown_as`` is the folder the trails name (the report's final place; default ``folder``)."""
    from hflite.explain import TRAIL_CSS, TrailSource, trail_html

    source = TrailSource(folder)
    shown = Path(shown_as) if shown_as is not None else Path(folder)
    parts = []
    for ident in ids:
        trail = replace(source.trail(ident), folder=shown)
        parts.append(
            f'<section class="trail" id="{escape(ident)}">{trail_html(trail)}'
            '<p class="back"><a href="report.html#trades">back to the trades</a></p></section>'
        )
    title = escape(f"{result.strategy} · {result.run_id}")
    intro = (
        f"The audit trail of each of the {len(parts):,} decisions that opened or closed a trade"
        + (" or that the LLM section lists" if result.llm is not None else "")
        + ", as <code>hflite explain &lt;id&gt;</code> prints it: the intent, the risk verdict and every "
        "check, the AI's views and the LLM's explanation when the run had them, the orders, fills and trade."
        if parts
        else "No decision opened or closed a trade."
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Decision trails: {title}</title><style>{_CSS}{TRAIL_CSS}{_TRAILS_CSS}</style></head><body>"
        f'<header><h1>Decision trails: {title}</h1><nav><a href="report.html">report</a>'
        f'<a href="report.html#trades">trades</a></nav></header>'
        f'<main><p class="note">{intro}</p>{"".join(parts)}</main></body></html>\n'
    )


def _config_html(config: dict[str, Any]) -> str:
    text = json.dumps(_json_safe(config), indent=2, sort_keys=True, allow_nan=False)
    return f"<pre>{escape(text)}</pre>"


# ------------------------------------------------------------------------------------------ plots


def _thin(series: pd.Series, max_points: int, how: str = "last") -> pd.Series:
    """At most ``max_points`` points: equal-count buckets by position, each kept as its last (or min)."""
    s = series.dropna()
    if len(s) <= max_points:
        return s
    bucket = np.arange(len(s)) * max_points // len(s)
    if how == "min":
        pos = pd.Series(s.to_numpy()).groupby(bucket).idxmin().to_numpy()
    else:
        pos = np.flatnonzero(np.diff(bucket, append=bucket[-1] + 1))
    return s.iloc[pos]


def _x(index: pd.Index, daily: bool | None = None) -> list[str]:
    """Compact date labels: ``YYYY-MM-DD`` when there is at most one point per day, else with HH:MM."""
    idx = _utc_index(index)
    if daily is None:
        daily = idx.normalize().nunique() == len(idx)
    return list(idx.strftime("%Y-%m-%d" if daily else "%Y-%m-%d %H:%M"))


def _y(series: pd.Series) -> np.ndarray:
    """Plot values as float32 (serialised as compact base64 by plotly)."""
    return series.to_numpy(dtype="float32")


def _figure_html(fig: go.Figure, name: str) -> str:
    fig.update_layout(template=_TEMPLATE)
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{name}",
        config={"displaylogo": False, "responsive": True},
    )


#: Above this ratio between a benchmark's final value and the strategy's, the equity chart opens in log
#: scale: on a linear axis the larger curve flattens the other into a line.
_LOG_SCALE_RATIO = 3.0
_EQUITY_TITLE = {"linear": "Equity (USD)", "log": "Equity (USD, log scale)"}
_EQUITY_DTICK = {"linear": None, "log": "D2"}  # log: ticks at 1, 2 and 5 x 10^n only (20k, 50k, 100k)


def _benchmark_curves(result: RunResult) -> dict[str, pd.Series]:
    """Each benchmark's curve on its own calendar (to its own last bar), thinned for plotting."""
    return {name: _thin(_as_utc_series(c), _MAX_CURVE_POINTS) for name, c in result.benchmarks.items()}


def _equity_scale(strategy_final: float, benchmark_finals: Collection[float]) -> str:
    """The equity axis: "log" when a benchmark ends more than :data:`_LOG_SCALE_RATIO` times above or
    below the strategy, else "linear" (also when a value is not positive: a log axis cannot show it)."""
    finals = [float(v) for v in benchmark_finals]
    values = [float(strategy_final), *finals]
    if not finals or not all(math.isfinite(v) and v > 0 for v in values):
        return "linear"
    spread = max(max(v / strategy_final, strategy_final / v) for v in finals)
    return "log" if spread > _LOG_SCALE_RATIO else "linear"


def _equity_figure(result: RunResult) -> go.Figure:
    fig = go.Figure()
    thin = _thin(equity_frame(result)["equity"], _MAX_CURVE_POINTS)
    fig.add_scatter(x=_x(thin.index), y=_y(thin), name="Strategy", line={"width": 2})
    curves = _benchmark_curves(result)
    for name, curve in curves.items():
        fig.add_scatter(x=_x(curve.index), y=_y(curve), name=name, line={"width": 1.2})
    finals = [float(c.iloc[-1]) for c in curves.values() if len(c)]
    scale = _equity_scale(float(thin.iloc[-1]), finals) if len(thin) else "linear"
    buttons = [
        {
            "label": label,
            "method": "relayout",
            "args": [
                {
                    "yaxis.type": kind,
                    "yaxis.title.text": _EQUITY_TITLE[kind],
                    "yaxis.dtick": _EQUITY_DTICK[kind],
                }
            ],
        }
        for label, kind in (("Linear", "linear"), ("Log", "log"))
    ]
    fig.update_xaxes(type="date")
    fig.update_layout(
        height=440,
        margin={"t": 78},
        yaxis={
            "type": scale,
            "title": {"text": _EQUITY_TITLE[scale]},
            "dtick": _EQUITY_DTICK[scale],
            "tickformat": "~s",
        },
        # top left, above the legend: the top right belongs to plotly's toolbar
        updatemenus=[
            {
                "type": "buttons",
                "direction": "right",
                "buttons": buttons,
                "active": 1 if scale == "log" else 0,
                "showactive": True,
                "x": 0,
                "xanchor": "left",
                "y": 1.11,
                "yanchor": "bottom",
                "pad": {"l": 0, "r": 0, "t": 0, "b": 0},
            }
        ],
    )
    return fig


def _drawdown_figure(result: RunResult) -> go.Figure:
    frame = equity_frame(result)
    fig = go.Figure()
    dd = _thin(drawdown(frame["equity"]), _MAX_CURVE_POINTS, how="min")
    fig.add_scatter(
        x=_x(dd.index), y=_y(dd * 100), name="Strategy", fill="tozeroy", line={"width": 1, "color": "#cf222e"}
    )
    for name, curve in result.benchmarks.items():  # on its own calendar, to its own last bar
        bdd = _thin(drawdown(curve), _MAX_CURVE_POINTS, how="min")
        fig.add_scatter(x=_x(bdd.index), y=_y(bdd * 100), name=name, line={"width": 1, "dash": "dot"})
    fig.update_layout(height=300, xaxis_type="date", yaxis_title="Drawdown (%)", yaxis_ticksuffix="%")
    return fig


def _monthly_html(result: RunResult) -> str:
    table = monthly_returns(result.equity)
    if table.empty:
        return '<p class="note">Less than two days of equity: no monthly returns.</p>'
    z = table.to_numpy(dtype="float64") * 100
    text = [["" if math.isnan(v) else f"{v:.1f}%" for v in row] for row in z]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    years = [str(y) for y in table.index]
    fig = go.Figure(
        go.Heatmap(
            z=np.where(np.isnan(z), None, z),
            x=months,
            y=years,
            text=text,
            texttemplate="%{text}",
            colorscale="RdYlGn",
            zmid=0,
            xgap=2,
            ygap=2,
            hovertemplate="%{y} %{x}: %{text}<extra></extra>",
            colorbar={"ticksuffix": "%"},
        )
    )
    fig.update_layout(
        height=140 + 28 * len(years), yaxis={"autorange": "reversed", "type": "category"}, hovermode="closest"
    )
    return _figure_html(fig, "monthly")


def _prices_html(result: RunResult) -> str:
    symbols = [s for s in result.symbols if s in result.prices] + [
        s for s in result.prices if s not in result.symbols
    ]
    if not symbols:
        return '<p class="note">No prices.</p>'
    per_symbol = int(min(_MAX_PRICE_POINTS, max(_MIN_PRICE_POINTS, _PRICE_POINT_BUDGET // len(symbols))))
    fills = _with_columns(result.fills, FILL_COLUMNS)
    parts = [
        f'<p class="note">Close prices (at most {per_symbol:,} points per symbol) with fills: '
        "▲ buys, ▼ sells, at the fill price.</p>"
    ]
    for i, sym in enumerate(symbols):
        fig = _price_figure(sym, result.prices[sym], fills[fills["symbol"] == sym], per_symbol)
        parts.append(f"<h3>{escape(sym)}</h3>" + _figure_html(fig, f"price-{i}"))
    return "".join(parts)


def _price_figure(symbol: str, bars: pd.DataFrame, fills: pd.DataFrame, max_points: int) -> go.Figure:
    close = pd.Series(bars["close"].to_numpy(dtype="float64"), index=_utc_index(bars.index))
    close = _thin(close.sort_index(kind="stable"), max_points)
    daily = _utc_index(close.index).normalize().nunique() == len(close)
    fig = go.Figure()
    fig.add_scatter(
        x=_x(close.index, daily), y=_y(close), name=symbol, line={"width": 1.2, "color": "#57606a"}
    )
    side = fills["side"].astype(str).str.lower()
    for label, mask, marker, color in (
        ("buy", side == "buy", "triangle-up", "#1a7f37"),
        ("sell", side == "sell", "triangle-down", "#cf222e"),
    ):
        f = fills[mask]
        if len(f) > _MAX_MARKERS:
            f = f.iloc[np.linspace(0, len(f) - 1, _MAX_MARKERS).astype(int)]
        if f.empty:
            continue
        ts = _utc_index(pd.to_datetime(f["ts"], utc=True))
        hover = [f"{label} {q:,.6g} @ {p:,.6g}" for q, p in zip(f["qty"], f["price"], strict=True)]
        fig.add_scatter(
            x=_x(ts, daily),
            y=f["price"].to_numpy(dtype="float32"),
            mode="markers",
            name=label,
            marker={"symbol": marker, "size": 9, "color": color},
            hovertext=hover,
            hoverinfo="text",
        )
    fig.update_layout(height=320, xaxis_type="date", yaxis_title="Price")
    return fig


def _exposure_figure(result: RunResult) -> go.Figure:
    frame = equity_frame(result)
    eq = frame["equity"].where(frame["equity"].abs() > 0)
    fig = go.Figure()
    for col, label in (("gross_exposure", "Gross / equity"), ("net_exposure", "Net / equity")):
        ratio = _thin(frame[col] / eq, _MAX_CURVE_POINTS)
        fig.add_scatter(x=_x(ratio.index), y=_y(ratio * 100), name=label, line={"width": 1.2})
    fig.update_layout(height=300, xaxis_type="date", yaxis_title="% of equity", yaxis_ticksuffix="%")
    return fig
