"""The report's AI section: verdict first and honest, every table formatted, figures present, a run
without a model still renders, and the AI files have their columns and JSON-safe summary."""

from __future__ import annotations

import json
import math
import re
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hflite.ai.evaluation import AIResult
from hflite.analytics.report_ai import (
    AI_FILES,
    _equity_figure,
    ai_html,
    strongest_decisions,
    top_reason,
    write_ai_tables,
    yearly_returns,
)

NOT_BEAT = (
    "The AI ensemble did NOT beat technical only: 3.1% vs 5.2% total return, Sharpe 0.41 vs 0.55, ahead in "
    "40% of periods. The model's out-of-sample hit rate was 50.2%, NOT above the naive rate of always "
    "guessing the majority side (52.0%)."
)
BEAT = (
    "The AI ensemble beat technical only: 12.3% vs 5.2% total return, Sharpe 0.87 vs 0.55, ahead in 60% "
    "of periods. The model's out-of-sample hit rate was 54.3%, above the naive rate of always guessing the "
    "majority side (52.0%)."
)
FIGURES = ("fig-ai-weights", "fig-ai-equity", "fig-ai-calibration", "fig-ai-importance", "fig-ai-windows")
WINDOW_COLUMNS = ["model_id", "train_start", "train_end", "test_start", "test_end", "n_train", "n_test"]
DAYS = pd.date_range("2021-01-01", periods=300, freq="D", tz="UTC")


def _equity(rng: np.random.Generator, n: int = len(DAYS)) -> dict[str, pd.Series]:
    idx = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    return {
        name: pd.Series(100_000 * np.exp(np.cumsum(rng.normal(drift, 0.01, n))), index=idx, name=name)
        for name, drift in (("ensemble", 0.0004), ("technical", 0.0002), ("buy_hold", 0.0003))
    }


def _decisions(rng: np.random.Generator) -> pd.DataFrame:
    frames = []
    for sym in ("AAA", "BTCUSD"):
        n = len(DAYS)
        score = np.clip(rng.normal(0, 0.3, n), -0.95, 0.95)
        reasons = [json.dumps([["mom_20", 0.05, 0.1234], ["rsi_14", 61.0, -0.02]])] * n
        frames.append(
            pd.DataFrame(
                {
                    "ts": DAYS + pd.Timedelta(hours=21),
                    "symbol": sym,
                    "score": score,
                    "confidence": rng.uniform(0, 1, n),
                    **{c: rng.uniform(-1, 1, n) for c in ("banker", "investor", "market", "technical")},
                    **{
                        f"{c}_conf": rng.uniform(0, 1, n)
                        for c in ("banker", "investor", "market", "technical")
                    },
                    "technical_score": rng.uniform(-1, 1, n),
                    "prob_up": rng.uniform(0.3, 0.7, n),
                    "exp_return": rng.normal(0, 0.01, n),
                    "regime": "bull",
                    "model_id": "m-2021Q1",
                    "banker_reasons": reasons,
                    "investor_reasons": json.dumps([]),
                    "market_reasons": json.dumps([["prob_up", 0.61, 0.3]]),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def make_ai(verdict: str = NOT_BEAT, seed: int = 3) -> AIResult:
    """A small, realistic AI result: 3 windows, 4 quarters, 20 features, 2 symbols x 300 days."""
    rng = np.random.default_rng(seed)
    starts = pd.to_datetime(["2021-01-01", "2021-04-01", "2021-07-01"], utc=True)
    windows = pd.DataFrame(
        {
            "model_id": ["m-2021Q1", "m-2021Q2", "m-2021Q3"],
            "train_start": pd.Timestamp("2015-01-01", tz="UTC"),
            "train_end": starts - pd.Timedelta(days=8),
            "test_start": starts,
            "test_end": starts + pd.Timedelta(days=89),
            "n_train": [1500, 1563, 1626],
            "n_test": [63, 63, 64],
            "n_scored": [63, 63, 59],
            "hit_rate": [0.5432, 0.5111, 0.4877],
            "base_rate": [0.52, 0.55, 0.47],
            "auc": [0.5567, 0.5123, math.nan],
            "brier": [0.2489, 0.2501, 0.2533],
            "fwd_ret_up": [0.0031, -0.0012, math.nan],
        }
    )
    weights = pd.DataFrame(
        {"banker": [0.2, 0.1, 0.15], "investor": [0.2, 0.3, 0.25], "market": [0.6, 0.6, 0.6]},
        index=pd.DatetimeIndex(starts, name="start"),
    ).assign(rows=[0, 620, 700], fitted=[False, True, True])
    return AIResult(
        summary={
            "model": "lightgbm",
            "model_params": {"n_estimators": 200, "learning_rate": 0.05},
            "horizon_bars": 5,
            "walkforward": {
                "scheme": "expanding",
                "retrain": "quarterly",
                "train_years": 5,
                "embargo_bars": 5,
                "horizon": 5,
                "min_train_rows": 500,
                "start": "2021-01-01T00:00:00Z",
                "end": None,
            },
            "regime_source": "SPY",
            "weights": "learned",
            "fixed_weights": {"banker": 0.2, "investor": 0.2, "market": 0.6},
            "feature_key": "abcdef0123456789abcdef",
            "sentiment_method": "lm",
            "walkforward_run": "wf-20240101-abc",
            "windows": 3,
            "as_of": pd.Timestamp("2021-10-27", tz="UTC"),
        },
        decisions=_decisions(rng),
        windows=windows,
        calibration=pd.DataFrame(
            {
                "bin": ["0.3-0.4", "0.4-0.5", "0.5-0.6", "0.6-0.7"],
                "predicted": [0.37, 0.46, 0.55, 0.64],
                "realised": [0.41, 0.47, 0.5678, math.nan],
                "count": [120, 480, 510, 124],
            }
        ),
        importance=pd.DataFrame(
            {"feature": [f"feat_{i:02d}" for i in range(20)], "importance": np.linspace(0.1, 0.005, 20)}
        ),
        oos={
            "rows": 1234.0,
            "hit_rate": 0.5432,
            "base_rate": 0.48,
            "brier": 0.2489,
            "log_loss": 0.6912,
            "auc": 0.5567,
            "ic": 0.0412,
        },
        weights=weights,
        equity=_equity(rng),
        ablation=pd.DataFrame(
            {
                "period": ["2021Q1", "2021Q2", "2021Q3", "2021Q4"],
                "AI ensemble": [4.21, -1.5, 3.0, 0.4],
                "technical only": [2.0, 1.0, math.nan, 0.1],
                "buy and hold (equal weight)": [5.0, -3.0, 2.5, 1.0],
            }
        ),
        ablation_summary=pd.DataFrame(
            {
                "variant": ["AI ensemble", "technical only", "buy and hold (equal weight)"],
                "total_return_pct": [12.345, 5.2, 7.77],
                "cagr_pct": [15.1, 6.3, 9.4],
                "volatility_pct": [14.2, 11.0, 18.9],
                "sharpe": [0.8712, 0.55, 0.5],
                "max_drawdown_pct": [9.87, 8.1, 15.5],
                "ensemble_won_pct": [math.nan, 62.5, 37.5],
            }
        ),
        by_regime=pd.DataFrame(
            {
                "regime": ["bull", "sideways", "crisis"],
                "days": [180, 90, 29],
                "return_pct": [10.11, -0.5, -6.66],
                "ann_return_pct": [20.5, -2.0, -80.0],
                "ann_vol_pct": [12.0, 10.0, 40.0],
                "up_days_pct": [55.5, 49.0, 41.4],
                "model_hit_rate_pct": [56.78, 50.0, math.nan],
            }
        ),
        verdict=verdict,
        warnings=["Sentiment fell back to <lm>: no transformer model."],
    )


def make_no_model_ai() -> AIResult:
    """What a run with ``ai.model.enabled = false`` produces."""
    ai = make_ai()
    ai.summary = {**ai.summary, "model": "none", "model_params": {}, "walkforward_run": "", "windows": 0}
    ai.summary["weights"] = "fixed"
    ai.windows, ai.calibration, ai.importance = pd.DataFrame(), pd.DataFrame(), pd.DataFrame()
    ai.oos, ai.weights, ai.warnings = {"rows": 0.0}, None, []
    return ai


def bare(verdict: str) -> AIResult:
    """An AI result with nothing but a verdict (renders without any figure)."""
    empty = pd.DataFrame()
    return AIResult({}, empty, empty, empty, empty, {}, None, {}, empty, empty, empty, verdict)


@pytest.fixture(scope="module")
def ai() -> AIResult:
    return make_ai()


@pytest.fixture(scope="module")
def html(ai: AIResult) -> str:
    """The section of :func:`make_ai`, rendered once for the tests that only read it."""
    return ai_html(ai)


# --------------------------------------------------------------------------------------- verdict


def test_the_verdict_comes_first() -> None:
    html = ai_html(make_ai(BEAT))

    assert html.startswith('<div class="ai-verdict')
    assert html.index(escape(BEAT)) < html.index("<h3>")


def test_a_did_not_beat_verdict_is_styled_as_a_warning(html: str) -> None:
    first = html.split("</div>", 1)[0]

    assert 'class="ai-verdict warn"' in first
    assert "background:#fff8c5" in first


def test_a_not_above_verdict_alone_is_a_warning_and_a_beat_is_not() -> None:
    not_above = (
        "The AI ensemble beat technical only. The hit rate was 50.1%, NOT above the naive rate (52.0%)."
    )

    assert 'class="ai-verdict warn"' in ai_html(bare(not_above)).split("</div>", 1)[0]
    assert 'class="ai-verdict"' in ai_html(bare(BEAT)).split("</div>", 1)[0]


# ---------------------------------------------------------------------------------------- tables


def _row(html: str, label: str) -> list[str]:
    """The cells of the first table row whose first cell is ``label``."""
    match = re.search(rf"<tr><td[^>]*>{re.escape(label)}</td>(.*?)</tr>", html)
    assert match, f"no row {label!r}"
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))


def test_setup_names_the_model_walk_forward_and_weights(html: str) -> None:
    assert _row(html, "Model")[0] == "lightgbm (n_estimators=200, learning_rate=0.05)"
    assert _row(html, "Horizon")[0] == "5 bars"
    assert _row(html, "Walk-forward")[0] == (
        "scheme: expanding · retrain: quarterly · train years: 5 · embargo (bars): 5 · min train rows: 500 · "
        "first test: 2021-01-01 · last test: —"
    )
    assert _row(html, "Walk-forward windows in the run")[0] == "3"
    assert _row(html, "Ensemble weights")[0].startswith("learned walk-forward (2 of 3 periods fitted")
    assert _row(html, "Feature set")[0] == "abcdef012345"
    assert _row(html, "Walk-forward run")[0] == "wf-20240101-abc"


def test_oos_metrics_are_formatted_with_the_majority_side_rate(html: str) -> None:
    assert _row(html, "Hit rate")[0] == "54.3%"
    assert _row(html, "Majority-side base rate")[0] == "52.0%"
    assert _row(html, "AUC")[0] == "0.557"
    assert _row(html, "Brier score")[0] == "0.249"
    assert _row(html, "Log loss")[0] == "0.691"
    assert _row(html, "IC")[0] == "0.041"
    assert _row(html, "Rows")[0] == "1,234"


def test_ablation_summary_and_periods_are_formatted(html: str) -> None:
    assert _row(html, "AI ensemble") == ["12.3%", "15.1%", "14.2%", "0.87", "9.9%", "—"]
    assert _row(html, "technical only")[-1] == "62.5%"
    assert _row(html, "2021Q1") == ["4.2%", "2.0%", "5.0%"]
    assert _row(html, "2021Q3")[1] == "—"
    assert "<h3>Returns per period</h3>" in html


def test_more_than_24_periods_are_shown_per_year_with_every_period_collapsed() -> None:
    ai = make_ai()
    months = pd.period_range("2019-01", periods=30, freq="M").astype(str)
    ai.ablation = pd.DataFrame({"period": months, "AI ensemble": 1.0, "technical only": 0.0})

    html = ai_html(ai)

    assert "<h3>Returns per year</h3>" in html
    assert _row(html, "2019") == [f"{(1.01**12 - 1) * 100:.1f}%", "0.0%"]
    assert _row(html, "2021") == [f"{(1.01**6 - 1) * 100:.1f}%", "0.0%"]
    assert "<details><summary>Every period (30)</summary>" in html
    assert _row(html, "2020-06") == ["1.0%", "0.0%"]


def test_yearly_returns_compound_and_keep_a_year_without_data_empty() -> None:
    periods = pd.DataFrame({"period": ["2020Q1", "2020Q2", "2021Q1"], "a": [10.0, 10.0, math.nan]})

    years = yearly_returns(periods).set_index("period")["a"]

    assert years["2020"] == pytest.approx(21.0)
    assert math.isnan(years["2021"])


def test_calibration_regimes_and_windows_are_formatted(html: str) -> None:
    assert _row(html, "0.5-0.6") == ["55.0%", "56.8%", "510"]
    assert _row(html, "0.6-0.7")[1] == "—"
    assert _row(html, "bull") == ["180", "10.1%", "20.5%", "12.0%", "55.5%", "56.8%"]
    assert _row(html, "crisis")[-1] == "—"
    window = _row(html, "m-2021Q1")
    assert window[:3] == ["2015-01-01", "2020-12-24", "2021-01-01"]
    assert window[3:7] == ["2021-03-31", "1,500", "63", "63"]
    assert window[7:] == ["54.3%", "52.0%", "0.557", "0.249", "0.3%"]
    assert "<details><summary>Every window (3; also in ai_windows.csv)</summary>" in html


def test_decisions_show_the_largest_scores_with_their_top_reasons(ai: AIResult, html: str) -> None:
    top = strongest_decisions(ai.decisions)
    assert len(top) == 15
    assert top["score"].abs().min() >= ai.decisions["score"].abs().nlargest(15).min()
    first = top.iloc[0]
    cells = _row(html, f"{first['ts']:%Y-%m-%d %H:%M} UTC")
    assert cells[:2] == [first["symbol"], f"{first['score']:.3f}"]
    assert cells[-3:] == ["mom_20 (+0.12)", "—", "prob_up (+0.30)"]
    assert "ai_decisions.csv" in html


def test_top_reason_reads_json_and_tolerates_junk() -> None:
    assert top_reason('[["vix", 31.5, -0.456]]') == "vix (-0.46)"
    assert top_reason("[]") == "—"
    assert top_reason("not json") == "—"
    assert top_reason(None) == "—"


def test_warnings_are_listed_and_escaped(html: str) -> None:
    assert '<li class="warn">Sentiment fell back to &lt;lm&gt;: no transformer model.</li>' in html
    assert "<lm>" not in html


# ---------------------------------------------------------------------------------------- figures


def test_every_figure_has_its_div_id(html: str) -> None:
    for div_id in FIGURES:
        assert f'id="{div_id}"' in html
    assert "gain share, averaged over the run&#x27;s windows" in html


def test_equity_curves_are_thinned_to_at_most_2000_points() -> None:
    curves = _equity(np.random.default_rng(1), n=5000)

    fig = _equity_figure(curves)

    assert [len(trace.x) for trace in fig.data] == [2000, 2000, 2000]
    assert [trace.name for trace in fig.data] == [
        "AI ensemble",
        "technical only",
        "buy and hold (equal weight)",
    ]


def test_the_calibration_plot_zooms_to_predictions_that_bunch_in_one_decile() -> None:
    from hflite.ai.walkforward import calibration_table as bins
    from hflite.analytics.report_ai import _calibration_figure

    rng = np.random.default_rng(5)
    prob = rng.uniform(0.50, 0.56, 1000)
    table = bins(prob, rng.normal(0.0, 0.01, 1000))
    cal = pd.DataFrame({"bin": "", "predicted": table["mean_prob"], "realised": table["up_rate"],
                        "count": table["n"]})  # fmt: skip

    fig = _calibration_figure(cal)

    points = fig.data[2]
    assert len(points.x) == 10  # quantile bins: one point per tenth of the predictions
    lo, hi = fig.layout.xaxis.range
    assert 0.45 <= lo < min(points.x) and max(points.x) < hi <= 0.61
    assert fig.data[0].width < float(np.diff(np.sort(points.x)).min())  # bars do not overlap
    assert list(fig.data[1].x) == [lo, hi]  # the diagonal spans the zoomed axis


# -------------------------------------------------------------------------------------- no model


def test_a_run_without_a_model_renders_and_says_so() -> None:
    html = ai_html(make_no_model_ai())

    assert "No model (ai.model.enabled = false)" in html
    assert _row(html, "Model")[0] == "No model (ai.model.enabled = false)"
    assert _row(html, "Ensemble weights")[0] == "fixed (banker 20.0%, investor 20.0%, market 60.0%)"
    for div_id in ("fig-ai-weights", "fig-ai-calibration", "fig-ai-importance", "fig-ai-windows"):
        assert div_id not in html
    assert 'id="fig-ai-equity"' in html


def test_an_empty_result_renders() -> None:
    html = ai_html(bare(""))

    assert "No verdict" in html
    assert "No ablation was run." in html
    assert "No decisions recorded." in html


# ------------------------------------------------------------------------------------------ files


def test_write_ai_tables_writes_every_file_with_its_columns(tmp_path: Path) -> None:
    names = write_ai_tables(make_ai(), tmp_path)

    assert names == list(AI_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(AI_FILES)
    columns = {n: list(pd.read_csv(tmp_path / n).columns) for n in names if n.endswith(".csv")}
    assert columns["ai_decisions.csv"][:5] == ["intent_id", "ts", "symbol", "score", "confidence"]
    assert "market_reasons" in columns["ai_decisions.csv"]
    assert columns["ai_windows.csv"][:7] == WINDOW_COLUMNS
    assert "hit_rate" in columns["ai_windows.csv"]
    assert columns["ai_calibration.csv"] == ["bin", "predicted", "realised", "count"]
    assert columns["ai_importance.csv"] == ["feature", "importance"]
    assert columns["ai_ablation.csv"][0] == "period"
    assert columns["ai_ablation_summary.csv"][0] == "variant"
    assert columns["ai_regimes.csv"][-1] == "model_hit_rate_pct"
    assert columns["ai_weights.csv"] == ["start", "banker", "investor", "market", "rows", "fitted"]
    assert len(pd.read_csv(tmp_path / "ai_decisions.csv")) == 600


def test_the_summary_json_has_null_for_nan_and_iso_timestamps(tmp_path: Path) -> None:
    ai = make_ai()
    ai.oos["auc"] = math.nan

    write_ai_tables(ai, tmp_path)
    text = (tmp_path / "ai_summary.json").read_text(encoding="utf-8")
    payload = json.loads(text)

    assert "NaN" not in text
    assert payload["oos"]["auc"] is None
    assert payload["oos"]["hit_rate"] == 0.5432
    assert payload["verdict"] == NOT_BEAT
    assert payload["summary"]["as_of"] == "2021-10-27T00:00:00+00:00"
    assert payload["summary"]["walkforward"]["end"] is None


def test_without_a_model_no_weights_file_is_written(tmp_path: Path) -> None:
    names = write_ai_tables(make_no_model_ai(), tmp_path)

    assert "ai_weights.csv" not in names
    assert not (tmp_path / "ai_weights.csv").exists()
    assert list(pd.read_csv(tmp_path / "ai_windows.csv").columns)[:2] == ["model_id", "train_start"]
    assert json.loads((tmp_path / "ai_summary.json").read_text())["oos"] == {"rows": 0.0}
