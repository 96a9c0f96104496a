"""The validation report: a folder with ``index.html`` (verdict first), ``checks.csv``,
``candidates.csv`` and ``validation.json`` (the headline numbers, for tables such as the README's)."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hflite.config import redacted
from hflite.lab.html import figure, page, table, write_folder
from hflite.lab.validate import Validation

_METRIC_ROWS = (
    ("Total return", "total_return", "pct"),
    ("CAGR", "cagr", "pct"),
    ("Sharpe", "sharpe", "num"),
    ("Sortino", "sortino", "num"),
    ("Calmar", "calmar", "num"),
    ("Max drawdown", "max_drawdown", "pct"),
    ("Hit rate", "hit_rate", "pct"),
    ("Closed trades", "trades", "int"),
    ("Exposure", "exposure", "pct"),
)


def _fmt(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return {"pct": f"{v:.1%}", "num": f"{v:.2f}", "int": f"{v:.0f}"}.get(kind, str(v))


def headline(v: Validation) -> dict[str, Any]:
    """The numbers a summary table quotes (``validation.json``)."""
    m = v.metrics

    def f(x: Any) -> float | None:
        return float(x) if x is not None and math.isfinite(float(x)) else None

    out: dict[str, Any] = {
        "config": v.settings.run.name,
        "strategy": v.settings.strategy.name,
        "window": [str(v.window[0].date()), str(v.window[1].date())],
        "holdout_from": str(v.holdout.date()) if v.holdout is not None else None,
        "verdict": v.verdict[1],
        "sharpe": f(m["sharpe"]),
        "calmar": f(m["calmar"]),
        "cagr": f(m["cagr"]),
        "max_drawdown": f(m["max_drawdown"]),
        "deflated_sharpe": f(v.dsr.dsr) if v.dsr else None,
        "n_trials": v.candidates.n_trials,
        "pbo": f(v.pbo.pbo) if v.pbo else None,
        "cpcv_median_sharpe": f(v.cpcv.median) if v.cpcv else None,
        "kfold_sharpe": f(v.kfold.path_sharpes[0]) if v.kfold else None,
        "benchmarks": {k: {"sharpe": f(b["sharpe"]), "cagr": f(b["cagr"])} for k, b in v.bench.items()},
        "checks": [
            {"name": c.name, "passed": c.passed, "value": c.value, "target": c.target, "group": c.group}
            for c in v.checks
        ],
        "seconds": round(v.seconds, 2),
    }
    if v.holdout_metrics is not None:
        h = v.holdout_metrics
        out["holdout"] = {
            "sharpe": f(h["sharpe"]),
            "calmar": f(h["calmar"]),
            "cagr": f(h["cagr"]),
            "max_drawdown": f(h["max_drawdown"]),
            "total_return": f(h["total_return"]),
            "benchmarks": {
                k: {"sharpe": f(b["sharpe"]), "cagr": f(b["cagr"])} for k, b in v.holdout_bench.items()
            },
        }
    return out


def _verdict_html(v: Validation) -> str:
    level, sentence = v.verdict
    rows = [[c.group, c.name, c.target, c.value, _word(c.passed)] for c in v.checks]
    classes = [{True: "pass", False: "fail", None: "na"}[c.passed] for c in v.checks]
    return (
        f'<div class="verdict {level}">{escape(sentence)}</div>'
        + table(["", "Check", "Target", "Value", "Result"], rows, classes)
        + '<p class="note">"plan": the success criteria of the plan, on the research window. "lab": whether '
        "the result survives the lab's tests. The verdict reads the lab's checks.</p>"
    )


def _word(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def _setup_html(v: Validation) -> str:
    s = v.settings
    hold = (
        f"<p><b>Hold-out:</b> {v.holdout.date()} onwards was never used by these tests; it is traded once "
        "at the end with the same parameters and reported on its own.</p>"
        if v.holdout is not None
        else "<p><b>No hold-out</b> (--holdout none): every day was available to the tests.</p>"
    )
    return (
        f"<p><b>Config:</b> {escape(s.run.name)} · strategy {escape(s.strategy.name)} "
        f"{escape(json.dumps(s.strategy.params()))} · {len(s.run.symbols)} symbols · "
        f"{escape(s.run.frequency)}</p>"
        f"<p><b>Research window:</b> {v.window[0].date()} to {v.window[1].date()}</p>{hold}"
        f"<p><b>Candidates:</b> {escape(v.candidates.note)}</p>"
        + "".join(f'<p class="note warn">{escape(n)}</p>' for n in v.notes)
        + f'<p class="note">Ran in {v.seconds:.1f} s.</p>'
    )


def _performance_html(v: Validation) -> str:
    cols = ["Metric", "Strategy", *[n.removesuffix(" buy & hold") + " B&H" for n in v.bench]]
    rows = [
        [label, _fmt(v.metrics[k], kind), *[_fmt(b[k], kind) for b in v.bench.values()]]
        for label, k, kind in _METRIC_ROWS
    ]
    out = "<h3>Research window</h3>" + table(cols, rows)
    if v.holdout_metrics is not None:
        hcols = ["Metric", "Strategy", *[n.removesuffix(" buy & hold") + " B&H" for n in v.holdout_bench]]
        hrows = [
            [label, _fmt(v.holdout_metrics[k], kind), *[_fmt(b[k], kind) for b in v.holdout_bench.values()]]
            for label, k, kind in _METRIC_ROWS
        ]
        out += f"<h3>Hold-out ({v.holdout.date() if v.holdout else ''} onwards, fresh capital)</h3>" + table(
            hcols, hrows
        )
    return out


def _overfitting_html(v: Validation) -> str:
    parts = []
    if v.dsr is not None:
        d = v.dsr
        ppy = v.metrics["periods_per_year"]
        parts.append(
            table(
                ["Deflated Sharpe", "Value"],
                [
                    ["DSR = P(true Sharpe > expected max of N lucky trials)", f"{d.dsr:.3f}"],
                    ["Observed Sharpe (annualised)", f"{d.sr * math.sqrt(ppy):.2f}"],
                    ["Expected max Sharpe of N trials by luck (annualised)", f"{d.sr0 * math.sqrt(ppy):.2f}"],
                    ["N trials", f"{d.n_trials}"],
                    ["Variance of the trials' Sharpe (per period)", f"{d.var_trials_sr:.2e}"],
                    ["Days, skewness, kurtosis", f"{d.n_obs}, {d.skew:.2f}, {d.kurt:.2f}"],
                ],
            )
        )
    if v.pbo is not None:
        p = v.pbo
        fig = go.Figure(go.Histogram(x=p.logits, nbinsx=30, name="logit"))
        fig.add_vline(x=0, line_dash="dash")
        fig.update_layout(title=f"CSCV logits: PBO = {p.pbo:.2f} (share at or below 0)", xaxis_title="logit")
        sc = go.Figure(go.Scatter(x=p.is_performance, y=p.oos_performance, mode="markers", name="splits"))
        sc.update_layout(
            title="In-sample vs out-of-sample Sharpe of the in-sample best "
            f"(slope {p.degradation_slope:.2f}; P(OOS loss) {p.prob_oos_loss:.2f})",
            xaxis_title="in-sample Sharpe",
            yaxis_title="out-of-sample Sharpe",
        )
        parts.append(figure(fig, 300) + figure(sc, 320))
    c = v.candidates
    order = np.argsort(-np.nan_to_num(c.sharpes, nan=-np.inf))
    parts.append(
        "<h3>Candidates (research window)</h3>"
        + table(["Parameters", "Sharpe"], [[c.labels[i], _fmt(float(c.sharpes[i]), "num")] for i in order])
    )
    return "".join(parts)


def _cv_html(v: Validation) -> str:
    if v.cpcv is None or v.kfold is None:
        return "<p>Not applicable: fewer than two candidates, or too few days.</p>"
    cp, kf = v.cpcv, v.kfold
    fig = go.Figure(go.Bar(x=[f"path {i + 1}" for i in range(len(cp.path_sharpes))], y=cp.path_sharpes))
    fig.update_layout(title=f"CPCV out-of-sample Sharpe per path (N={cp.n_groups}, k={cp.n_test_groups})")
    picks = pd.Series(cp.picks).value_counts()
    return (
        f"<p>The days are cut into {cp.n_groups} groups; each of the {cp.n_splits} splits tests "
        f"{cp.n_test_groups} groups with the candidate that was best on the others (purged, embargo "
        f"{cp.embargo_days} days after each test group). Median path Sharpe <b>{cp.median:.2f}</b>; "
        f"the purged {kf.n_groups}-fold path: <b>{kf.path_sharpes[0]:.2f}</b>.</p>"
        + figure(fig, 300)
        + "<h3>Chosen in the CPCV splits</h3>"
        + table(["Candidate", "Splits"], [[k, int(n)] for k, n in picks.items()])
        + "<h3>Chosen in the k-fold</h3>"
        + table(["Fold", "Candidate"], [[i + 1, p] for i, p in enumerate(kf.picks)])
    )


def write_validation(
    v: Validation, out_dir: Path, extra_sections: list[tuple[str, str]] | None = None
) -> Path:
    """Write the folder; returns the path of index.html."""
    sections = [
        ("Verdict", _verdict_html(v)),
        ("Setup", _setup_html(v)),
        ("Performance", _performance_html(v)),
        ("Overfitting", _overfitting_html(v)),
        ("Cross-validation", _cv_html(v)),
        *(extra_sections or []),
    ]
    for name, section in v.analyses.get("sections", []):
        sections.append((name, section))
    title = f"HedgeFund-Lite validation: {v.settings.run.name} ({v.settings.strategy.name})"

    def fill(tmp: Path) -> None:
        (tmp / "index.html").write_text(page(title, sections), encoding="utf-8")
        pd.DataFrame([vars(c) for c in v.checks]).to_csv(tmp / "checks.csv", index=False)
        pd.DataFrame({"parameters": v.candidates.labels, "sharpe": v.candidates.sharpes}).to_csv(
            tmp / "candidates.csv", index=False
        )
        payload = {**headline(v), "config_file": redacted(v.settings)}
        (tmp / "validation.json").write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")

    write_folder(out_dir, fill)
    return Path(out_dir) / "index.html"
