"""The ai_ensemble strategy end to end on the sample: backtest, report, explain, replay parity, the
CLI commands, and the brain's regimes driving the risk manager."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.analytics.report import write_report
from hflite.cli import app
from hflite.engine.replay import replay
from hflite.engine.run import backtest
from hflite.explain import load_trail, render_trail
from tests.conftest import make_settings


def _ai_settings(store, registry: Path, **extra):
    sections = {
        "run": {
            "symbols": ["SPY", "TLT", "AAPL", "BTC-USD"],
            "start": "2019-01-02",
            "end": "2020-12-31",
            "benchmarks": ["SPY"],
        },
        "strategy": {"name": "ai_ensemble", "enter": 0.2, "min_confidence": 0.15},
        "ai": {
            "history_start": "2012-01-01",
            "registry_dir": str(registry),
            "model": {"kind": "linear"},
            "walkforward": {"retrain": "quarterly", "train_years": 3, "min_train_rows": 300},
            "ensemble": {"weights": "learned", "min_rows": 300, "learn_years": 3},
        },
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return make_settings(store, **sections)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def run(sample_store, registry):
    return backtest(_ai_settings(sample_store, registry), sample_store, run_id="ai-test")


@pytest.mark.slow
def test_ai_backtest_trades_through_the_risk_gate_with_its_reasons(run) -> None:
    assert len(run.trades) > 5
    entries = run.verdicts[run.verdicts["kind"] == "entry"]
    assert entries["intent_reason"].str.startswith("AI ensemble").all()
    assert entries["reason"].str.contains("conviction").any()  # sized by the confidence
    assert (entries["qty_approved"] <= entries["qty_requested"] + 1e-9).all()


@pytest.mark.slow
def test_ai_result_holds_oos_metrics_ablation_and_one_decision_row_per_intent(run) -> None:
    ai = run.ai
    assert ai is not None
    assert ai.summary["model"] == "linear"
    assert len(ai.windows) == 8  # quarterly windows of 2019-2020
    first = pd.to_datetime(ai.windows["test_start"].iloc[0], utc=True)
    assert first == pd.Timestamp("2019-01-02", tz="UTC")  # the run's start
    assert ai.oos["rows"] > 1000
    assert 0.3 < ai.oos["hit_rate"] < 0.7
    # the AUC's session-block bootstrap interval holds it; sessions count days, not symbol-days
    assert ai.oos["auc_lo"] < ai.oos["auc"] < ai.oos["auc_hi"]
    assert ai.oos["ic_lo"] < ai.oos["ic"] < ai.oos["ic_hi"]
    assert 400 < ai.oos["n_dates"] < 800 and ai.oos["n_independent"] < ai.oos["n_dates"]
    assert list(ai.ablation_summary["variant"]) == [
        "AI ensemble",
        "technical only",
        "buy and hold (equal weight)",
    ]
    assert ai.ablation_summary.loc[0, "total_return_pct"] == pytest.approx(
        (run.equity.iloc[-1] / run.initial_cash - 1) * 100, rel=1e-9
    )
    assert ai.verdict.startswith("The AI ensemble")
    assert set(ai.decisions["intent_id"]) == set(run.verdicts["intent_id"])
    assert ai.decisions["score"].notna().all()
    assert ai.decisions["model_id"].str.contains(r"-w\d{3}$").all()
    assert {"bull", "bear", "sideways", "crisis"} & set(ai.by_regime["regime"])


@pytest.mark.slow
def test_ai_report_has_the_ai_section_and_explain_shows_the_views(run, tmp_path: Path) -> None:
    html_path = write_report(run, tmp_path / "rep")
    html = html_path.read_text(encoding="utf-8")
    assert "<h2>AI</h2>" in html
    assert run.ai.verdict.split(":")[0] in html
    folder = html_path.parent
    summary = json.loads((folder / "ai_summary.json").read_text())
    assert summary["oos"]["rows"] == run.ai.oos["rows"]
    intent = run.verdicts["intent_id"].iloc[0]
    trail = load_trail(folder, intent)
    assert trail.ai is not None
    assert trail.ai["market_reasons"]
    from rich.console import Console

    con = Console(record=True, width=140)
    con.print(render_trail(trail))
    text = con.export_text()
    assert "AI ensemble" in text
    assert "banker" in text
    assert "investor" in text


@pytest.mark.slow
def test_a_second_run_reuses_the_registry_and_decides_identically(run, sample_store, registry) -> None:
    again = backtest(_ai_settings(sample_store, registry), sample_store, run_id="ai-test-2")
    pd.testing.assert_frame_equal(run.fills, again.fills)
    assert run.ai.summary["walkforward_run"] == again.ai.summary["walkforward_run"]


@pytest.mark.slow
def test_ai_replay_matches_the_backtest(run, sample_store, registry, tmp_path: Path) -> None:
    settings = _ai_settings(sample_store, registry)
    rp = asyncio.run(replay(settings, sample_store, run_id="ai-test", journal_path=tmp_path / "j.sqlite"))
    pd.testing.assert_frame_equal(run.orders.reset_index(drop=True), rp.orders.reset_index(drop=True))
    pd.testing.assert_frame_equal(run.fills.reset_index(drop=True), rp.fills.reset_index(drop=True))
    np.testing.assert_allclose(run.equity.to_numpy(), rp.equity.to_numpy(), rtol=1e-12)


@pytest.mark.slow
def test_brain_regimes_drive_the_risk_manager_of_another_strategy(sample_store, registry) -> None:
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "GLD"], "start": "2019-06-03", "end": "2020-06-30"},
        strategy={"name": "trend", "fast": 10, "slow": 30},
        risk={"regime": {"source": "ai"}},
        ai={"history_start": "2015-01-01", "registry_dir": str(registry)},
    )
    result = backtest(settings, sample_store, run_id="regime-ai")
    assert result.ai is None
    regimes = result.risk_checks[result.risk_checks["name"] == "regime_scale"]
    assert len(regimes) > 0
    assert (regimes["value"] < 1).any()  # a bear or crisis regime cut some entries in 2020


def test_sentiment_command_scores_one_headline() -> None:
    out = CliRunner().invoke(app, ["sentiment", "Net loss narrowed as costs fell"])
    assert out.exit_code == 0, out.output
    assert "positive" in out.output
    assert "finance" in out.output


def test_sentiment_command_scores_a_file_into_csv(tmp_path: Path) -> None:
    src = tmp_path / "h.txt"
    src.write_text("Company misses earnings estimates\n\nSales rose 12%\n", encoding="utf-8")
    dest = tmp_path / "scores.csv"
    out = CliRunner().invoke(app, ["sentiment", "--file", str(src), "--out", str(dest)])
    assert out.exit_code == 0, out.output
    frame = pd.read_csv(dest)
    assert list(frame.columns) == ["text", "label", "score", "method"]
    assert list(frame["label"]) == ["negative", "positive"]


def test_sentiment_command_needs_exactly_one_input() -> None:
    out = CliRunner().invoke(app, ["sentiment"])
    assert out.exit_code == 2


@pytest.mark.slow
def test_features_build_train_and_models_list_commands(sample_store, tmp_path: Path) -> None:
    cfg = tmp_path / "ai.toml"
    cfg.write_text(
        f"""
[run]
symbols = ["SPY", "TLT"]
start = "2019-01-02"
end = "2019-12-31"
[data]
dir = "{sample_store.root}"
[ai]
history_start = "2014-01-01"
registry_dir = "{tmp_path / "models"}"
[ai.walkforward]
retrain = "quarterly"
train_years = 3
min_train_rows = 300
""",
        encoding="utf-8",
    )
    runner = CliRunner()
    out = runner.invoke(app, ["features", "build", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "SPY" in out.output
    out = runner.invoke(app, ["train", "--model", "linear", "--config", str(cfg)])
    assert out.exit_code == 0, out.output
    assert "4 windows" in out.output
    out = runner.invoke(app, ["models", "list", "--registry", str(tmp_path / "models")])
    assert out.exit_code == 0, out.output
    assert out.output.count("linear") >= 4
    out = runner.invoke(app, ["train", "--model", "nope", "--config", str(cfg)])
    assert out.exit_code == 2
    assert "model" in out.output
