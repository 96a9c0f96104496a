"""The report's LLM section and files, and the decision trails every report links its trades to: the
verdict first, budget and outcomes, the cutoff warning, the advisor's cuts, escaped model text, the
LLM CSVs and JSON, trails.html with an element per trade decision, and trade rows linking to it."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pandas as pd
import pytest

from hflite.ai.llm.passes import ADVICE_COLUMNS, EXPLANATION_COLUMNS, SUMMARY_COLUMNS, LLMRunResult
from hflite.analytics import REPORT_FILES, SECTIONS, write_report
from hflite.analytics.report import trade_decisions, trail_ids
from hflite.analytics.report_llm import LLM_FILES, llm_html, llm_verdict, write_llm_tables
from hflite.engine.result import RunResult
from tests.llm_helpers import CUTOFF, MODEL, SCRIPT, first_trade_decisions, read_html, trend_run, with_llm


@pytest.fixture(scope="module")
def plain(sample_store) -> RunResult:
    return trend_run(sample_store, "llm-report-run")


@pytest.fixture(scope="module")
def run(plain: RunResult, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    result = with_llm(plain)
    folder = tmp_path_factory.mktemp("llm-report") / "llm-report-run"
    write_report(result, folder)
    return result, folder


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start : html.index("</section>", start)]


# -- files ------------------------------------------------------------------------------------------


def test_the_folder_holds_the_llm_files_and_trails(run):
    _, folder = run
    assert {p.name for p in folder.iterdir()} == {*REPORT_FILES, *LLM_FILES}


@pytest.mark.parametrize(
    ("name", "columns", "rows"),
    [
        ("llm_explanations.csv", EXPLANATION_COLUMNS, 3),
        ("llm_advice.csv", ADVICE_COLUMNS, 3),
        ("llm_summaries.csv", SUMMARY_COLUMNS, 2),
    ],
)
def test_llm_csvs_have_their_columns(run, name, columns, rows):
    _, folder = run
    frame = pd.read_csv(folder / name)
    assert list(frame.columns) == columns and len(frame) == rows


def test_the_llm_summary_json_holds_stats_scope_and_roles(run):
    result, folder = run
    payload = json.loads((folder / "llm_summary.json").read_text(encoding="utf-8"))
    assert payload["stats"] == json.loads(json.dumps(result.llm.stats))
    assert payload["stats"]["training_cutoff"] == CUTOFF.isoformat()
    assert (payload["scope"], payload["roles"]) == ("entries", result.llm.roles)
    assert payload["fallbacks"] == result.llm.fallbacks == 2


def test_an_llm_result_without_rows_still_writes_every_column(tmp_path):
    llm = LLMRunResult(stats={"mode": "off"})
    assert write_llm_tables(llm, tmp_path) == list(LLM_FILES)
    for name, columns in zip(LLM_FILES, (EXPLANATION_COLUMNS, ADVICE_COLUMNS, SUMMARY_COLUMNS), strict=False):
        frame = pd.read_csv(tmp_path / name)
        assert list(frame.columns) == columns and frame.empty


def test_a_run_without_llm_has_no_llm_files_or_section(plain, tmp_path):
    write_report(plain, tmp_path / "r")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == sorted(REPORT_FILES)
    html = read_html(tmp_path / "r")
    assert "<h2>LLM</h2>" not in html and 'href="#llm"' not in html


# -- the section ------------------------------------------------------------------------------------


def test_the_section_comes_after_ai_and_before_risk_and_leads_with_the_verdict(run):
    result, folder = run
    assert SECTIONS.index("LLM") == SECTIONS.index("AI") + 1
    html = read_html(folder)
    assert 'href="#llm"' in html and html.index("<h2>LLM</h2>") < html.index("<h2>Risk</h2>")
    verdict = llm_verdict(result.llm)
    assert verdict == (
        "live: 5 calls (1 failed), 2 fell back (gguf unavailable); 1 of 3 explanations, "
        "1 of 3 portfolio-manager answers and 0 of 2 news summaries answered by the model"
    )
    section = _section(html, "llm")
    first = re.search(r"<div class=\"llm-verdict[^\"]*\"[^>]*>(.*?)</div>", section)
    assert first is not None and first.group(1) == escape(verdict)
    assert section.index("llm-verdict") < section.index("<h3>")


def test_a_replay_verdict_counts_the_replayed_answers():
    stats = {"mode": "replay", "outcomes": {"explain:replay": 229}, "fallbacks": {}}
    assert llm_verdict(LLMRunResult(stats=stats)) == (
        "replay: 229 of 229 explanations replayed from recorded replies, 0 fallbacks"
    )
    stats = {"mode": "replay", "outcomes": {"explain:replay": 7, "explain:fallback": 3},
             "fallbacks": {"no recorded reply": 3}}  # fmt: skip
    assert llm_verdict(LLMRunResult(stats=stats)) == (
        "replay: 7 of 10 explanations replayed from recorded replies, 3 fallbacks (no recorded reply)"
    )


def test_the_setup_table_shows_budget_use_chain_latency_and_sources(run):
    result, folder = run
    s = result.llm.stats
    section = _section(read_html(folder), "llm")
    for text in (
        "ollama → gguf",
        MODEL,
        CUTOFF.isoformat(),
        f"{s['calls']} of at most {s['budget']['max_calls']} ({s['failed_calls']} failed)",
        f"{s['tokens']:,} of at most {s['budget']['max_tokens']:,} "
        f"({s['prompt_tokens']:,} prompt + {s['completion_tokens']:,} completion)",
        "30 s / 1 / 2",
        f"{s['latency_ms_median']:,.0f} ms / {s['latency_ms_max']:,.0f} ms",
        "journal: 3 replies; configs/tapes/ai.jsonl: 12 replies",
        "explain on (scope entries: entries that sent an order), advise on, summarise on",
    ):
        assert escape(text) in section, text
    assert "<tr><td>Backends down</td>" in section and ">gguf</td>" in section


def test_outcomes_per_role_and_source_and_fallbacks_by_reason(run):
    _, folder = run
    section = _section(read_html(folder), "llm")
    assert "<tr><td>explanations</td><td>1</td><td>1</td><td>1</td><td>3</td></tr>" in section
    assert "<tr><td>portfolio-manager answers</td><td>1</td><td>1</td><td>1</td><td>3</td></tr>" in section
    assert "<tr><td>news summaries</td><td>0</td><td>2</td><td>0</td><td>2</td></tr>" in section
    assert "<tr><td>All</td><td>2</td><td>4</td><td>2</td><td>8</td></tr>" in section
    assert "<tr><td>gguf unavailable</td><td>2</td></tr>" in section


def test_answers_about_dates_before_the_cutoff_get_a_warning_box(run):
    result, folder = run
    section = _section(read_html(folder), "llm")
    n = result.llm.stats["before_cutoff"]
    text = (
        f"{n} answers are about dates before {MODEL}'s training cutoff {CUTOFF}: "
        "the model may know what happened next"
    )
    assert escape(text) in section
    assert 'class="llm-cutoff warn" role="alert"' in section


def test_no_cutoff_warning_without_flagged_answers(run):
    result, _ = run
    llm = LLMRunResult(stats={**result.llm.stats, "before_cutoff": 0}, explanations=result.llm.explanations)
    assert "llm-cutoff" not in llm_html(llm)


def test_the_advisor_table_counts_actions_and_lists_cuts_with_quantities(run):
    result, folder = run
    section = _section(read_html(folder), "llm")
    advice = result.llm.advice
    for action in ("approve", "scale", "veto"):
        n = int((advice["action"] == action).sum())
        assert f"<tr><td>{action}</td><td>{n}</td>" in section
    cuts = advice[advice["action"].isin(["scale", "veto"])]
    for r in cuts.itertuples(index=False):
        assert f"{r.qty_before:,.6g} → {r.qty_after:,.6g}" in section
        assert f'<a href="trails.html#{r.intent_id}">{r.intent_id}</a>' in section


def test_summaries_are_counted_and_shown(run):
    _, folder = run
    section = _section(read_html(folder), "llm")
    assert "2 summaries of 6 headlines about 2 symbols; 0 rule-based (fallback)" in section
    assert "+0.30 (0.70): earnings beat" in section and "-0.20 (0.70): earnings beat" in section


def test_the_explanation_sample_links_each_decision_to_its_trail(run):
    result, folder = run
    section = _section(read_html(folder), "llm")
    trails = read_html(folder, "trails.html")
    for r in result.llm.explanations.itertuples(index=False):
        assert f'<a href="trails.html#{r.intent_id}">{r.intent_id}</a>' in section
        assert f'<section class="trail" id="{r.intent_id}">' in trails
        assert f'<td style="text-align:left;">{r.stance}</td><td>{r.confidence:.2f}</td>' in section
    assert "fallback (gguf unavailable)" in section


def test_model_text_is_escaped_everywhere(run):
    _, folder = run
    for name in ("report.html", "trails.html"):
        html = read_html(folder, name)
        assert SCRIPT not in html, name
        assert escape(SCRIPT) in html, name


# -- trades and their decision trails ---------------------------------------------------------------


def test_trails_html_has_an_element_for_every_decision_that_opened_or_closed_a_trade(run):
    result, folder = run
    trails = read_html(folder, "trails.html")
    ids = re.findall(r'<section class="trail" id="([^"]+)">', trails)
    assert ids == trail_ids(result)
    decisions = trade_decisions(result)
    assert (decisions["entry_decision"] != "").all()
    closed = ~result.trades["is_open"].astype(bool)
    assert (decisions.loc[closed, "exit_decision"] != "").all()
    assert set(decisions["entry_decision"]) | set(decisions.loc[closed, "exit_decision"]) <= set(ids)


def test_the_trades_table_links_each_trade_to_its_entry_and_exit_trails(run):
    result, folder = run
    entry, exit_ = first_trade_decisions(result)
    section = _section(read_html(folder), "trades")
    assert f'<a href="trails.html#{entry}">{entry}</a>' in section
    assert f'<a href="trails.html#{exit_}">{exit_}</a>' in section
    first_row = section[section.index("<tbody><tr>") : section.index("</tr>", section.index("<tbody><tr>"))]
    assert f'href="trails.html#{entry}"' in first_row
    trails = read_html(folder, "trails.html")
    start = trails.index(f'id="{entry}"')
    trail = trails[start : trails.index("</section>", start)]
    assert f"Decision {entry}" in trail and "opened" in trail


def test_a_stop_loss_exit_links_to_the_entry_that_placed_the_stop(run):
    result, folder = run
    decisions = trade_decisions(result)
    stopped = decisions[decisions["exit_order"].str.endswith("-sl")]
    assert len(stopped) > 0
    assert (stopped["exit_decision"] == stopped["entry_decision"]).all()
    orders = result.orders.set_index("order_id")
    for r in stopped.itertuples():
        assert orders.loc[r.exit_order, "decision_id"] == r.entry_decision
    assert "(by its stop-loss order)" in _section(read_html(folder), "trades")


def test_agreement_counts_model_stances_that_follow_the_entries_side() -> None:
    from hflite.analytics.report_llm import agreement

    frame = pd.DataFrame(
        {
            "kind": ["entry", "entry", "entry", "exit", "entry"],
            "side": ["buy", "buy", "sell", "sell", "buy"],
            "stance": ["bullish", "neutral", "bearish", "bullish", "bullish"],
            "source": ["replay", "live", "replay", "replay", "fallback"],
        }
    )
    assert agreement(frame) == (
        "The model's stance agrees with 2 of the 3 entries it explained "
        "(67%: bullish on a buy, bearish on a sell)."
    )
    assert agreement(frame[frame["source"] == "fallback"]).startswith("No entry was explained by the model")
