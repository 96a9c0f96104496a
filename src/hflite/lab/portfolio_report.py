"""The portfolio run's report: the usual backtest report of the combined run, plus ``portfolio.html``
(weights over time, every rebalance with the reason for each cut, each sleeve's standalone equity against
the combined equity, sleeve metrics) and its tables.

``write_report`` builds and moves the usual folder into place atomically; the portfolio files are then
added one by one, each written to a temporary name and renamed, and report.html's navigation gains a link
to portfolio.html.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from hflite.analytics.report import (
    _CSS,
    ReportError,
    _figure_html,
    _section,
    _table,
    _thin,
    _x,
    _y,
    write_report,
)
from hflite.analytics.summary import format_metric
from hflite.lab.portfolio import PortfolioResult

#: Files the portfolio adds to the report folder.
PORTFOLIO_FILES = (
    "portfolio.html",
    "portfolio_rebalances.csv",
    "portfolio_sleeves.csv",
    "portfolio_equity.csv",
    "portfolio.json",
)
REBALANCE_COLUMNS = [
    "day",
    "effective_from",
    "sleeve",
    "raw_weight",
    "weight",
    "method",
    "history_days",
    "trailing_sharpe",
    "drawdown_pct",
    "status",
    "reason",
]
_PERIOD = {"weekly": "week", "monthly": "month", "quarterly": "quarter"}
SECTIONS = ("Summary", "Weights over time", "Rebalances", "Sleeves", "Equity", "How it works")
_METRIC_COLS = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Volatility", "volatility", "pct"),
    ("Sharpe", "sharpe", "ratio"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Trades", "trades", "count"),
    ("Fees (USD)", "fees_usd", "usd"),
    ("Final equity (USD)", "final_equity", "usd"),
)


def write_portfolio_report(pr: PortfolioResult, out_dir: Path) -> Path:
    """Write the report folder of a portfolio run and return the path of portfolio.html."""
    out_dir = Path(out_dir)
    write_report(pr.result, out_dir, pr.metrics)
    try:
        _atomic(out_dir / "portfolio_rebalances.csv", rebalance_frame(pr).to_csv(index=False))
        _atomic(out_dir / "portfolio_sleeves.csv", sleeve_frame(pr).to_csv(index=False))
        _atomic(out_dir / "portfolio_equity.csv", equity_frame(pr).to_csv(index_label="day"))
        _atomic(out_dir / "portfolio.json", json.dumps(summary(pr), indent=2, allow_nan=False) + "\n")
        _atomic(out_dir / "portfolio.html", render_portfolio_html(pr))
        _link_from_report(out_dir / "report.html")
    except OSError as exc:
        raise ReportError(f"cannot write the portfolio files in {out_dir}: {exc.strerror or exc}") from exc
    return out_dir / "portfolio.html"


def _atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # noqa: PTH101 - mkstemp makes it private; a report is an ordinary file
        os.replace(tmp, path)  # noqa: PTH105
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _link_from_report(report: Path) -> None:
    """Add a "Portfolio" link at the head of report.html's navigation (once)."""
    html = report.read_text(encoding="utf-8")
    link = '<a href="portfolio.html"><b>Portfolio</b></a>'
    if link in html or html.count("<nav>") != 1:
        return
    _atomic(report, html.replace("<nav>", f"<nav>{link}", 1))


# ----------------------------------------------------------------------------------------- tables


def _fnum(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def rebalance_frame(pr: PortfolioResult) -> pd.DataFrame:
    """One row per rebalance and sleeve: raw and final weight, the selection rule's numbers and verdict."""
    rows = []
    for reb in pr.plan:
        eff = None if reb.day is None else pd.Timestamp(reb.effective_ns, tz="UTC")
        for name in pr.names:
            check = reb.checks.get(name)
            if name in reb.cut:
                status, reason = "cut", reb.cut[name]
            elif name in reb.restored:
                status, reason = "restored", reb.restored[name]
            else:
                status, reason = "active", ""
            rows.append(
                {
                    "day": reb.day,
                    "effective_from": eff,
                    "sleeve": name,
                    "raw_weight": reb.raw[name],
                    "weight": reb.weights[name],
                    "method": reb.method,
                    "history_days": reb.history,
                    "trailing_sharpe": None if check is None else check.sharpe,
                    "drawdown_pct": None if check is None else check.drawdown_pct,
                    "status": status,
                    "reason": reason,
                }
            )
    return pd.DataFrame(rows, columns=REBALANCE_COLUMNS)


def _combined_by_sleeve(pr: PortfolioResult) -> dict[str, tuple[float, int]]:
    """Sleeve -> (P&L in USD of its trades in the combined run, open ones marked; closed trades)."""
    trades = pr.result.trades
    owner = pr.config.owner()
    out = {name: (0.0, 0) for name in pr.names}
    if trades is None or trades.empty:
        return out
    sleeve = trades["symbol"].map(owner)
    for name in pr.names:
        mine = trades[sleeve == name]
        out[name] = (float(mine["pnl_usd"].sum()), int((~mine["is_open"].astype(bool)).sum()))
    return out


def sleeve_frame(pr: PortfolioResult) -> pd.DataFrame:
    """One row per sleeve: its strategy, its standalone metrics, how often it was cut, its final weight and
    what it made in the combined account."""
    combined = _combined_by_sleeve(pr)
    rebs = pr.plan[1:]
    rows = []
    for s in pr.sleeves:
        name, m = s.config.name, s.metrics
        cut = sum(1 for r in rebs if name in r.cut)
        rows.append(
            {
                "sleeve": name,
                "strategy": s.config.strategy_name(),
                "params": json.dumps(s.config.strategy_params(), sort_keys=True),
                "symbols": " ".join(s.config.symbols),
                **{f"standalone_{key}": m.get(key) for _, key, _ in _METRIC_COLS},
                "rebalances_cut": cut,
                "share_cut": cut / len(rebs) if rebs else 0.0,
                "final_weight": pr.plan[-1].weights[name],
                "combined_pnl_usd": combined[name][0],
                "combined_trades": combined[name][1],
            }
        )
    return pd.DataFrame(rows)


def equity_frame(pr: PortfolioResult) -> pd.DataFrame:
    """Each sleeve's standalone equity and the combined equity on the weekday calendar (USD)."""
    frame = pr.sleeve_equity.copy()
    eq = pr.result.equity
    ts = pd.DatetimeIndex(eq.index).tz_convert("UTC").as_unit("ns").asi8
    ends = (pr.days + pd.Timedelta(days=1)).as_unit("ns").asi8
    pos = np.searchsorted(ts, ends, side="left") - 1
    values = eq.to_numpy(dtype="float64")
    frame["combined"] = np.where(pos >= 0, values[np.clip(pos, 0, None)], pr.result.initial_cash)
    frame.index = frame.index.strftime("%Y-%m-%d")
    return frame


def summary(pr: PortfolioResult) -> dict[str, Any]:
    """portfolio.json: the rules, the sizing scale, the final weights and the headline numbers."""
    return {
        "run_id": pr.result.run_id,
        "allocation": pr.config.allocation,
        "rebalance": pr.config.rebalance,
        "sizing": pr.sizing,
        "configured_risk": pr.risk_pct,
        "scale": pr.scale,
        "gate_risk": pr.risk_pct * pr.scale,
        "rebalances": len(pr.plan) - 1,
        "final_weights": pr.final_weights(),
        "metrics": {k: _fnum(pr.metrics.get(k)) for _, k, _ in _METRIC_COLS},
        "sleeves": {
            s.config.name: {k: _fnum(s.metrics.get(k)) for _, k, _ in _METRIC_COLS} for s in pr.sleeves
        },
        "warnings": list(pr.warnings),
    }


# ------------------------------------------------------------------------------------------- page


def render_portfolio_html(pr: PortfolioResult) -> str:
    """portfolio.html: a self-contained page (plotly.js inlined) in the style of report.html."""
    parts = {
        "Summary": lambda: _summary_html(pr),
        "Weights over time": lambda: _figure_html(weights_figure(pr), "weights"),
        "Rebalances": lambda: _rebalances_html(pr),
        "Sleeves": lambda: _sleeves_html(pr),
        "Equity": lambda: _figure_html(equity_figure(pr), "sleeve-equity"),
        "How it works": lambda: _rules_html(pr),
    }
    nav = '<a href="report.html">report</a>' + "".join(
        f'<a href="#{t.lower().replace(" ", "-")}">{escape(t)}</a>' for t in SECTIONS
    )
    body = "".join(_section(t, parts[t]()) for t in SECTIONS)
    title = escape(f"portfolio · {pr.result.run_id}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<header><h1>HedgeFund-Lite portfolio: {title}</h1><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )


def _pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x * 100:.1f}%"


def _sizing_text(pr: PortfolioResult) -> str:
    n, r, top = len(pr.names), pr.risk_pct, pr.risk_pct * pr.scale
    what = "of equity risked per trade" if pr.sizing == "atr" else "of equity per position"
    return (
        f"What a weight means: with {n} sleeves, a sleeve of weight w gets {r:g}% × {n} × w {what} (an "
        f"equal weight, 1/{n}, is exactly the configured {r:g}%), at most {r:g}% × {pr.scale:g} = {top:g}%. "
        f"The risk gate sizes each entry at {top:g}% and multiplies it by min(1, {n}·w / {pr.scale:g}), "
        "shown as the “conviction” in each verdict. Every other limit of the gate applies to the combined "
        "book, so a sleeve gets at most what its weight says."
    )


def _summary_html(pr: PortfolioResult) -> str:
    cfg = pr.config
    last = pr.plan[-1]
    when = "initial" if last.day is None else f"{last.day:%Y-%m-%d}"
    intro = (
        f"<p>Allocation <b>{escape(cfg.allocation)}</b>, rebalanced <b>{escape(cfg.rebalance)}</b> on the "
        f"last {cfg.lookback_days} weekdays of each sleeve's standalone daily returns (equal weights before "
        f"{cfg.min_history_days} weekdays of history); {len(pr.plan) - 1} rebalances. "
        f"{escape(_selection_text(pr))}</p><p class='note'>{escape(_sizing_text(pr))}</p>"
    )
    header = ["Sleeve", "Strategy", "Symbols", f"Weight ({when})", "Status", "Trailing Sharpe", "Drawdown"]
    rows = []
    for s in pr.sleeves:
        name = s.config.name
        check = last.checks.get(name)
        status = f"cut: {last.cut[name]}" if name in last.cut else "active"
        rows.append(
            [
                name,
                s.config.strategy_name(),
                ", ".join(s.config.symbols),
                f"{last.weights[name]:.3f}",
                status,
                "—" if check is None or check.sharpe != check.sharpe else f"{check.sharpe:.2f}",
                "—" if check is None else f"{check.drawdown_pct:.1f}%",
            ]
        )
    weights = _table(header, rows, left=(0, 1, 2, 4), wrap=(4,))
    mrows = [["Combined (one account)", *_metric_cells(pr.metrics)]]
    mrows += [[f"{s.config.name} (alone)", *_metric_cells(s.metrics)] for s in pr.sleeves]
    metrics = _table(["Run", *[c[0] for c in _METRIC_COLS]], mrows)
    warn = "".join(f'<p class="warn">{escape(w)}</p>' for w in pr.warnings)
    return f"{intro}<h3>Final weights</h3>{weights}<h3>Headline metrics</h3>{metrics}{warn}"


def _metric_cells(m: dict[str, float]) -> list[str]:
    return [format_metric(m.get(key), kind) for _, key, kind in _METRIC_COLS]  # type: ignore[arg-type]


def _selection_text(pr: PortfolioResult) -> str:
    sel = pr.config.selection
    if not sel.enabled:
        return "Selection: off (no sleeve is ever cut)."
    fate = (
        "gets no capital and its positions are closed" if sel.cut == 0 else f"keeps {sel.cut:g} of its weight"
    )
    where = "the others share its weight" if pr.config.redistribute else "its weight stays in cash"
    return (
        f"Selection: at each rebalance, a sleeve whose standalone Sharpe over the last {sel.window_days} "
        f"weekdays is below {sel.min_sharpe:g}, or whose equity is more than {sel.max_dd_pct:g}% below that "
        f"window's peak, {fate} ({where}) until a later rebalance finds neither true."
    )


def _rebalances_html(pr: PortfolioResult) -> str:
    header = ["Day", "Method", *pr.names, "Cuts and restores"]
    rows = []
    for reb in pr.plan:
        day = "start" if reb.day is None else f"{reb.day:%Y-%m-%d}"
        cells = []
        for name in pr.names:
            w, raw = reb.weights[name], reb.raw[name]
            cells.append(f"{w:.3f}" if abs(w - raw) < 5e-4 else f"{w:.3f} ({raw:.3f})")
        why = [f"{n} cut: {r}" for n, r in reb.cut.items()] + [f"{n} {r}" for n, r in reb.restored.items()]
        rows.append([day, reb.method, *cells, "; ".join(why)])
    note = (
        '<p class="note">Weights in force from the first bar after each day; a cut sleeve shows its final '
        "weight and, in brackets, what the method gave it. The same rows, with each sleeve's trailing Sharpe "
        "and drawdown, are in portfolio_rebalances.csv.</p>"
    )
    return note + _table(header, rows, left=(0, 1, len(header) - 1), wrap=(1, len(header) - 1), fit=True)


def _sleeves_html(pr: PortfolioResult) -> str:
    frame = sleeve_frame(pr)
    header = [
        "Sleeve",
        "Strategy",
        "Total return (alone)",
        "Sharpe (alone)",
        "Max DD (alone)",
        "Trades (alone)",
        "Rebalances cut",
        "Final weight",
        "P&L in the account (USD)",
        "Trades in the account",
    ]
    rows = [
        [
            r["sleeve"],
            f"{r['strategy']} {r['params']}",
            _pct(r["standalone_total_return"]),
            format_metric(r["standalone_sharpe"], "ratio"),
            _pct(r["standalone_max_drawdown"]),
            format_metric(r["standalone_trades"], "count"),
            f"{r['rebalances_cut']} ({r['share_cut'] * 100:.0f}%)",
            f"{r['final_weight']:.3f}",
            format_metric(r["combined_pnl_usd"], "usd"),
            str(r["combined_trades"]),
        ]
        for r in frame.to_dict("records")
    ]
    note = (
        '<p class="note">“Alone”: the sleeve run by itself with the full initial cash at the configured risk '
        "(the record the allocation reads). “In the account”: its symbols' trades in the combined run.</p>"
    )
    return note + _table(header, rows, left=(0, 1), wrap=(1,))


def _rules_html(pr: PortfolioResult) -> str:
    cfg = pr.config
    items = [
        "Each sleeve first runs alone through the same engine, risk limits and costs; its daily equity "
        "(weekdays, the last value before each midnight UTC) is the record the allocation and the selection "
        "read.",
        f"At the end of each {_PERIOD[cfg.rebalance]} (the last weekday in the calendar) the weights are "
        f"computed from the sleeves' returns of the last {cfg.lookback_days} weekdays up to that day, and "
        "apply from the first bar after it: no weight uses a return it could not have known.",
        _method_text(cfg.allocation, cfg.target_vol_pct),
        "A sleeve that did not move in the window (no trades) keeps an equal share 1/N; the method splits "
        "the rest among the others.",
        _selection_text(pr),
        _sizing_text(pr),
        "Weights size new entries; an open position keeps its size until it exits (there is no resize "
        "order), except that a sleeve cut to weight 0 is sent flat at its next bar.",
    ]
    return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _method_text(method: str, target_vol_pct: float) -> str:
    return {
        "equal": "equal: 1/N each.",
        "inverse_vol": "inverse_vol: each sleeve's weight proportional to 1 / its return volatility.",
        "vol_target": f"vol_target: inverse-vol weights, scaled down (never up) so that the predicted "
        f"volatility of the combined account is {target_vol_pct:g}% a year; the rest is left unallocated.",
        "risk_parity": "risk_parity (skfolio RiskBudgeting): every sleeve contributes the same share of the "
        "variance, on a Ledoit-Wolf shrunk covariance.",
        "hrp": "hrp (skfolio HierarchicalRiskParity): sleeves clustered by correlation, capital split by "
        "inverse variance down the tree, on a Ledoit-Wolf shrunk covariance.",
        "mean_variance": "mean_variance (skfolio MeanRisk): the maximum-Sharpe portfolio on James-Stein "
        "shrunk means and a Ledoit-Wolf covariance; minimum variance when no sleeve has a positive expected "
        "return.",
    }[method]


# ------------------------------------------------------------------------------------------ plots


def weights_figure(pr: PortfolioResult) -> go.Figure:
    """Stacked areas of the weights in force (a step at each rebalance's first bar), plus what was left
    unallocated (vol targeting, or every sleeve cut)."""
    start = pr.days[0] if len(pr.days) else pr.result.start
    xs = [start if r.day is None else pd.Timestamp(r.effective_ns, tz="UTC") for r in pr.plan]
    end = pr.days[-1] + pd.Timedelta(days=1) if len(pr.days) else pr.result.end
    xs.append(end)
    labels = [f"{x:%Y-%m-%d}" for x in xs]
    fig = go.Figure()
    for name in pr.names:
        ys = [r.weights[name] for r in pr.plan]
        fig.add_scatter(
            x=labels, y=[*ys, ys[-1]], name=name, stackgroup="w", line={"shape": "hv", "width": 0.5}
        )
    free = [max(0.0, 1.0 - sum(r.weights.values())) for r in pr.plan]
    if max(free) > 1e-9:
        fig.add_scatter(
            x=labels,
            y=[*free, free[-1]],
            name="unallocated",
            stackgroup="w",
            line={"shape": "hv", "width": 0.5, "color": "#d0d7de"},
        )
    fig.update_layout(yaxis={"title": "weight", "range": [0, 1.0001]}, height=360)
    return fig


def equity_figure(pr: PortfolioResult) -> go.Figure:
    """The combined account's equity against each sleeve run alone (all from the same initial cash)."""
    fig = go.Figure()
    eq = _thin(pr.result.equity, 5000)
    fig.add_scatter(x=_x(eq.index), y=_y(eq), name="Combined", line={"width": 2.5})
    for s in pr.sleeves:
        curve = _thin(s.result.equity, 5000)
        fig.add_scatter(x=_x(curve.index), y=_y(curve), name=f"{s.config.name} (alone)", line={"width": 1.2})
    fig.update_layout(yaxis={"title": "Equity (USD)"}, height=420)
    return fig
