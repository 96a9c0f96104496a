"""``hflite explain`` with LLMs: the trail carries the decision's LLM explanation and the portfolio
manager's advice with their provenance; without an LLM row it shows the rule-based explanation and why.
Model text is shown as plain text, never as markup."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hflite.ai.llm.roles import facts_from_rows, rule_explanation
from hflite.analytics import write_report
from hflite.cli import app
from hflite.engine.result import RunResult
from hflite.explain import RULE_BASED, TrailSource, load_trail, load_trails, render_trail, trail_html
from tests.llm_helpers import CUTOFF, MARKUP, MODEL, SCRIPT, first_trade_decisions, trend_run, with_llm

runner = CliRunner()


@pytest.fixture(scope="module")
def plain(sample_store) -> RunResult:
    return trend_run(sample_store, "llm-explain-run")


@pytest.fixture(scope="module")
def folders(plain: RunResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path, Path]:
    """The run with LLM files, and the same run without them."""
    root = tmp_path_factory.mktemp("llm-explain")
    result = with_llm(plain)
    write_report(result, root / "with-llm")
    write_report(plain, root / "no-llm")
    return result, root / "with-llm", root / "no-llm"


def _text(trail, width: int = 140) -> str:
    console = Console(record=True, width=width)
    console.print(render_trail(trail))
    return console.export_text()


def _row(result: RunResult, source: str) -> dict:
    ex = result.llm.explanations
    return ex[ex["source"] == source].iloc[0].to_dict()


def test_the_trail_carries_the_llm_row_typed_and_the_advice(folders):
    result, folder, _ = folders
    live = _row(result, "live")
    trail = load_trail(folder, live["intent_id"])
    assert trail.llm is not None and trail.advice is not None
    assert trail.llm["reasons"] == [f"trend is up {SCRIPT}", MARKUP]
    assert trail.llm["risks"] == ["a gap down through the stop"]
    assert (trail.llm["stance"], trail.llm["confidence"]) == ("bullish", pytest.approx(0.81))
    assert (trail.llm["record_id"], trail.llm["before_cutoff"], trail.llm["prompt_tokens"]) == (7, True, 350)
    assert trail.llm["prompt_hash"] == live["prompt_hash"]
    assert (trail.advice["action"], trail.advice["scale_applied"]) == ("scale", 0.5)
    assert trail.llm_run is not None and trail.llm_run["scope"] == "entries"


def test_the_panel_shows_stance_reasons_and_provenance(folders):
    result, folder, _ = folders
    live = _row(result, "live")
    text = _text(load_trail(folder, live["intent_id"]))
    assert "LLM explanation" in text and "bullish (confidence 0.81)" in text
    assert f"- trend is up {SCRIPT}" in text and f"- {MARKUP}" in text  # as written, not as markup
    assert "- a gap down through the stop" in text
    assert "live (the model answered during this run)" in text
    assert live["prompt_hash"][:12] in text and live["prompt_hash"][:13] not in text
    for name, value in (("Backend", "ollama"), ("Model", MODEL), ("Journal record", "7"),
                        ("Latency", "812 ms"), ("Tokens", "350 prompt + 61 completion")):  # fmt: skip
        assert any(line.split() == [*name.split(), *value.split()] for line in text.splitlines()), name
    assert f"{live['ts']:%Y-%m-%d %H:%M} UTC (the decision's time" in text
    assert f"before {MODEL}'s training cutoff {CUTOFF}: the model may know what happened next" in text


def test_the_portfolio_manager_panel_shows_the_cut(folders):
    result, folder, _ = folders
    advice = result.llm.advice
    scaled = advice[advice["action"] == "scale"].iloc[0]
    text = _text(load_trail(folder, scaled["intent_id"]))
    assert "LLM portfolio manager" in text and "SCALE" in text
    assert "asked x0.50, applied x0.50" in text
    before, after = scaled["qty_before"], scaled["qty_after"]
    assert f"{before:,.0f} -> {after:,.0f} (kept {after / before:.1%})" in text
    vetoed = advice[advice["action"] == "veto"].iloc[0]
    assert "VETO" in _text(load_trail(folder, vetoed["intent_id"]))


def test_replayed_and_fallback_answers_say_so(folders):
    result, folder, _ = folders
    replay = _text(load_trail(folder, _row(result, "replay")["intent_id"]))
    assert "replayed (a recorded reply of the model)" in replay and "training cutoff" not in replay
    fallback = _text(load_trail(folder, _row(result, "fallback")["intent_id"]))
    assert "rule-based fallback (gguf unavailable)" in fallback
    assert any(line.split() == ["Backend", "rule"] for line in fallback.splitlines())


def test_a_decision_outside_the_scope_gets_the_rule_based_explanation(folders):
    result, folder, _ = folders
    _, exit_id = first_trade_decisions(result)
    trail = load_trail(folder, exit_id)
    assert trail.llm is None and trail.advice is None
    text = _text(trail)
    assert RULE_BASED in text
    assert "outside the run's explain scope (entries: only entries that sent an order)" in text
    assert "LLM portfolio manager" not in text


def test_a_report_without_llm_files_explains_by_the_rules(folders, plain):
    _, _, folder = folders
    entry, _ = first_trade_decisions(plain)
    trail = load_trail(folder, entry)
    assert trail.llm is None and trail.llm_run is None
    text = " ".join(_text(trail, width=200).split())
    assert RULE_BASED in text and "the run had no LLM ([llm] off, or no role on)" in text
    verdict = plain.verdicts[plain.verdicts["intent_id"] == entry].iloc[0].to_dict()
    expected = rule_explanation(facts_from_rows(verdict))
    assert f"{expected.stance} (confidence {expected.confidence:.2f})" in text
    assert f"- {expected.reasons[0]}" in text


def test_the_cli_prints_the_llm_panel(folders):
    result, folder, _ = folders
    live = _row(result, "live")
    out = runner.invoke(app, ["explain", live["intent_id"], "--report", str(folder)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "LLM explanation" in out.output and live["prompt_hash"][:12] in out.output
    assert "LLM portfolio manager" in out.output


def test_load_trails_reads_the_folder_once_and_matches_load_trail(folders):
    result, folder, _ = folders
    ids = list(result.verdicts["intent_id"][:40])
    many = load_trails(folder, ids)
    assert [t.intent.id for t in many] == ids
    for ident, trail in zip(ids[::8], many[::8], strict=True):
        assert _text(trail) == _text(load_trail(folder, ident))
    source = TrailSource(folder)
    source.trail(ids[0])
    fills = source.fills
    source.trail(ids[1])
    assert source.fills is fills  # shared, not read again


def test_trail_html_holds_the_same_blocks_escaped(folders):
    result, folder, _ = folders
    live = _row(result, "live")
    html = trail_html(load_trail(folder, live["intent_id"]))
    assert SCRIPT not in html and "trend is up &lt;script&gt;" in html
    assert "<caption>LLM explanation</caption>" in html and live["prompt_hash"][:12] in html
    assert "<caption>LLM portfolio manager</caption>" in html
    assert "<caption>Risk verdict</caption>" in html and "<caption>Orders</caption>" in html
    assert not math.isnan(load_trail(folder, live["intent_id"]).llm["latency_ms"])
