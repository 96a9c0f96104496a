"""``hflite explain``: one decision's trail read back from a report folder, found by intent or order id."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.analytics import write_report
from hflite.cli import app
from hflite.engine.result import RunResult
from hflite.engine.run import backtest
from hflite.explain import (
    TrailError,
    find_trail,
    latest_report,
    load_trail,
    report_dir,
    report_folders,
    suggest_ids,
)
from tests.conftest import make_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}  # no folding: every cell on one line


@pytest.fixture(scope="module")
def run(sample_store, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    """A 2017-2018 trend run on SPY, QQQ and GLD with a human pause in 2018: approved, resized (position
    cap, correlation, volatility) and rejected (pause) entries, stop-outs and exits."""
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "QQQ", "GLD"], "start": "2017-01-03", "end": "2018-12-31"},
        strategy={"name": "trend", "fast": 10, "slow": 40},
        risk={"events": [{"at": "2018-03-01", "action": "pause", "reason": "holiday"},
                         {"at": "2018-06-01", "action": "resume", "reason": "back"}]},
    )  # fmt: skip
    result = backtest(settings, sample_store, run_id="explain-run")
    root = tmp_path_factory.mktemp("cwd")
    folder = root / "reports" / "explain-run"
    write_report(result, folder)
    return result, folder


def _first(result: RunResult, status: str) -> pd.Series:
    v = result.verdicts
    return v[(v["status"] == status) & (v["kind"] == "entry")].iloc[0]


def test_the_run_has_every_kind_of_verdict(run):
    result, _ = run
    assert {"approved", "resized", "rejected"} <= set(result.verdicts["status"])


def test_the_trail_of_a_resized_entry_has_its_checks_order_fills_and_trade(run):
    result, folder = run
    v = _first(result, "resized")
    trail = load_trail(folder, v["intent_id"])
    assert (trail.matched_by, trail.run_id, trail.intent.symbol) == ("intent id", "explain-run", v["symbol"])
    assert trail.verdict.qty_requested == pytest.approx(v["qty_requested"])
    assert trail.verdict.qty_approved == v["qty_approved"]
    assert trail.verdict.rules == tuple(v["rules"].split(";"))
    expected = result.risk_checks[result.risk_checks["intent_id"] == v["intent_id"]]
    assert [c.name for c in trail.verdict.checks] == list(expected["name"])
    assert [c.value for c in trail.verdict.checks] == pytest.approx(list(expected["value"]))
    assert [c.limit for c in trail.verdict.checks] == list(expected["limit"])
    assert [c.passed for c in trail.verdict.checks] == list(expected["passed"])
    assert trail.orders[0]["order_id"] == v["order_id"]
    assert {f["order_id"] for f in trail.fills} <= {o["order_id"] for o in trail.orders}
    opened = [t for t in trail.trades if t["role"].startswith("opened")]
    assert len(opened) == 1
    first_fill = min(f["ts"] for f in trail.fills if f["order_id"] == v["order_id"])
    assert opened[0]["entry_ts"] == first_fill
    assert trail.data_versions == result.config["data"]["pin"]


def test_the_trail_of_an_exit_names_the_trade_it_closed(run):
    result, folder = run
    v = result.verdicts
    exit_ = v[(v["kind"] == "exit") & v["order_id"].notna()].iloc[0]
    trail = load_trail(folder, exit_["intent_id"])
    assert trail.verdict.checks == ()  # exits are always allowed
    assert [t["role"] for t in trail.trades] == ["closed"]
    exit_fill = max(f["ts"] for f in trail.fills)
    assert trail.trades[0]["exit_ts"] == exit_fill


def test_a_stop_loss_order_leads_to_the_entry_that_placed_it(run):
    result, folder = run
    o = result.orders
    stop = o[o["order_id"].str.endswith("-sl") & (o["status"] == "filled")].iloc[0]
    trail = load_trail(folder, stop["order_id"])
    assert trail.intent.id == stop["decision_id"] and trail.matched_by == f"order {stop['order_id']}"
    assert [t["role"] for t in trail.trades] == [f"opened; closed by {stop['order_id']}"]
    assert trail.trades[0]["exit_reason"] == "stop-loss"


def test_explain_prints_every_check_of_an_intent(run):
    result, folder = run
    v = _first(result, "resized")
    out = runner.invoke(app, ["explain", v["intent_id"], "--report", str(folder)], env=WIDE)
    assert out.exit_code == 0, out.output
    text = out.output
    assert f"Decision {v['intent_id']}" in text and "RESIZED" in text
    assert v["intent_reason"] in text
    checks = result.risk_checks[result.risk_checks["intent_id"] == v["intent_id"]]
    assert f"Risk checks ({len(checks)}," in text
    for c in checks.itertuples(index=False):
        assert c.name in text
    assert text.count("FAIL") == int((~checks["passed"]).sum())
    assert v["order_id"] in text and "Trade " in text and "bars/SPY/1d" in text


def test_explain_finds_a_decision_by_its_order_id(run):
    result, folder = run
    v = _first(result, "approved")
    out = runner.invoke(app, ["explain", v["order_id"], "--report", str(folder)], env=WIDE)
    assert out.exit_code == 0, out.output
    assert f"Decision {v['intent_id']}" in out.output and f"order {v['order_id']}" in out.output
    assert "APPROVED" in out.output


def test_explain_shows_a_rejection_and_its_rule(run):
    result, folder = run
    v = _first(result, "rejected")
    out = runner.invoke(app, ["explain", v["intent_id"], "--report", str(folder)], env=WIDE)
    assert out.exit_code == 0, out.output
    assert "REJECTED" in out.output and "paused by a human: holiday" in out.output
    assert "Orders: none" in out.output


def test_explain_reads_the_newest_report_under_the_configured_report_dir(run, monkeypatch):
    result, folder = run
    monkeypatch.delenv("HFLITE_REPORT__DIR", raising=False)
    older = folder.parent / "older-run"
    older.mkdir(exist_ok=True)
    (older / "verdicts.csv").write_text("intent_id\n", encoding="utf-8")
    os.utime(older / "verdicts.csv", (0, 0))
    monkeypatch.chdir(folder.parent.parent)  # reports/ is the default report.dir
    assert latest_report(Path("reports")).name == "explain-run"
    v = _first(result, "resized")
    out = runner.invoke(app, ["explain", v["intent_id"]], env=WIDE)
    assert out.exit_code == 0, out.output
    assert "explain-run" in out.output


def test_an_unknown_id_fails_and_suggests_ids_sharing_its_prefix(run):
    _, folder = run
    out = runner.invoke(app, ["explain", "trend-SPY-d99999", "--report", str(folder)], env=WIDE)
    assert out.exit_code == 1
    text = " ".join(out.output.split())
    assert "no decision or order 'trend-SPY-d99999'" in text
    assert "ids that share its prefix: trend-SPY-d" in text
    assert "Traceback" not in out.output


def test_no_report_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HFLITE_REPORT__DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    out = runner.invoke(app, ["explain", "trend-SPY-d1"], env=WIDE)
    assert out.exit_code == 1
    assert "no report folder under reports" in out.output and "hflite backtest" in out.output


def test_a_folder_that_is_not_a_report_is_refused(tmp_path):
    with pytest.raises(TrailError, match="not a report folder"):
        load_trail(tmp_path, "x")


def test_suggestions_prefer_ids_that_start_with_the_query_in_natural_order():
    ids = ["trend-SPY-d10", "trend-SPY-d2", "trend-QQQ-d3", "trend-SPY-b5-1"]
    assert suggest_ids("trend-SPY-d", ids) == ["trend-SPY-d2", "trend-SPY-d10"]
    assert suggest_ids("trend-SPY-x", ids) == ["trend-SPY-b5-1", "trend-SPY-d2", "trend-SPY-d10"]
    assert suggest_ids("zzz", ids) == []


def test_explain_help_has_an_example():
    out = runner.invoke(app, ["explain", "--help"])
    assert out.exit_code == 0 and "Example" in out.output


def test_the_report_dir_comes_from_the_environment_then_the_config_then_the_default(tmp_path, monkeypatch):
    monkeypatch.delenv("HFLITE_REPORT__DIR", raising=False)
    config = tmp_path / "c.toml"
    config.write_text('[run]\nsymbols = ["SPY"]\n[report]\ndir = "out/reports"\n', encoding="utf-8")
    assert report_dir(None) == Path("reports")
    assert report_dir(config) == Path("out/reports")
    monkeypatch.setenv("HFLITE_REPORT__DIR", str(tmp_path / "env"))
    assert report_dir(config) == tmp_path / "env"


def test_a_report_written_before_the_audit_trail_still_explains_what_it_has(run, tmp_path):
    result, folder = run
    old = tmp_path / "old-report"
    old.mkdir()
    legacy = ["intent_id", "symbol", "ts", "status", "qty_requested", "qty_approved", "reason"]
    pd.read_csv(folder / "verdicts.csv")[legacy].to_csv(old / "verdicts.csv", index=False)
    for name in ("orders.csv", "fills.csv", "trades.csv", "config.json"):
        (old / name).write_bytes((folder / name).read_bytes())
    v = _first(result, "resized")
    trail = load_trail(old, v["intent_id"])
    assert trail.verdict.status == "resized" and trail.verdict.checks == ()
    assert trail.orders[0]["order_id"] == v["order_id"]
    assert (trail.intent.kind, trail.intent.side) == ("entry", v["side"])  # inferred
    assert [t["role"] for t in trail.trades][0].startswith("opened")
    assert any("predates the audit trail" in n for n in trail.notes)
    out = runner.invoke(app, ["explain", v["intent_id"], "--report", str(old)], env=WIDE)
    assert out.exit_code == 0, out.output


# -- without --report: every report under report.dir, newest first -----------------------------------


def _reports_root(folder: Path, tmp_path: Path, names_oldest_first: list[str]) -> Path:
    """A reports/ folder under ``tmp_path`` holding copies of the report ``folder``, each written one
    minute after the one before."""
    root = tmp_path / "reports"
    for age, name in enumerate(reversed(names_oldest_first)):
        copy = root / name
        shutil.copytree(folder, copy)
        stamp = 1_700_000_000 - 60 * age
        os.utime(copy / "verdicts.csv", (stamp, stamp))
    return root


def _report_without_ids(root: Path, name: str, stamp: int) -> None:
    """A newer report that holds no decision at all (a run that traded nothing)."""
    (root / name).mkdir(parents=True)
    (root / name / "verdicts.csv").write_text("intent_id,ts\n", encoding="utf-8")
    os.utime(root / name / "verdicts.csv", (stamp, stamp))


def test_without_report_explain_finds_the_id_in_an_older_report_and_names_it(run, tmp_path, monkeypatch):
    result, folder = run
    root = _reports_root(folder, tmp_path, ["trend-run"])
    _report_without_ids(root, "ai-run", 1_800_000_000)  # the newest report does not hold the id
    monkeypatch.setenv("HFLITE_REPORT__DIR", str(root))
    v = _first(result, "resized")
    out = runner.invoke(app, ["explain", v["intent_id"]], env=WIDE)
    assert out.exit_code == 0, out.output
    assert f"found in {root / 'trend-run'}" in " ".join(out.output.split())
    assert f"Decision {v['intent_id']}" in out.output


def test_an_id_in_several_reports_is_shown_from_the_newest_and_says_so(run, tmp_path, monkeypatch):
    result, folder = run
    root = _reports_root(folder, tmp_path, ["run-a", "run-b", "run-c"])
    monkeypatch.setenv("HFLITE_REPORT__DIR", str(root))
    v = _first(result, "approved")
    out = runner.invoke(app, ["explain", v["order_id"]], env=WIDE)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"found in 3 reports; showing the newest, {root / 'run-c'}; use --report to choose" in text


def test_find_trail_searches_the_reports_newest_first(run, tmp_path):
    result, folder = run
    root = _reports_root(folder, tmp_path, ["old", "new"])
    _report_without_ids(root, "newest", 1_800_000_000)
    v = _first(result, "rejected")
    found = find_trail(root, v["intent_id"])
    assert [p.name for p in report_folders(root)] == ["newest", "new", "old"]
    assert [p.name for p in found.folders] == ["new", "old"]
    assert found.trail.folder == root / "new" and found.trail.intent.id == v["intent_id"]


def test_an_id_in_no_report_fails_saying_how_many_reports_were_searched(run, tmp_path, monkeypatch):
    _, folder = run
    root = _reports_root(folder, tmp_path, ["run-a", "run-b"])
    monkeypatch.setenv("HFLITE_REPORT__DIR", str(root))
    out = runner.invoke(app, ["explain", "trend-SPY-d99999"], env=WIDE)
    assert out.exit_code == 1
    text = " ".join(out.output.split())
    assert f"no decision or order 'trend-SPY-d99999' in the 2 reports under {root}" in text
    assert "ids that share its prefix: trend-SPY-d" in text and "Traceback" not in out.output


def test_a_reason_with_brackets_prints_as_written(run, tmp_path):
    """Reasons are the strategy's text: "[etf]" in one is shown, never swallowed as rich markup."""
    result, folder = run
    copy = tmp_path / "bracketed"
    shutil.copytree(folder, copy)
    v = _first(result, "resized")
    verdicts = pd.read_csv(copy / "verdicts.csv")
    mine = verdicts["intent_id"] == v["intent_id"]
    verdicts.loc[mine, "intent_reason"] = "[etf] " + verdicts.loc[mine, "intent_reason"]
    verdicts.loc[mine, "reason"] = "[bold]cut[/bold] " + verdicts.loc[mine, "reason"].fillna("")
    verdicts.to_csv(copy / "verdicts.csv", index=False)
    out = runner.invoke(app, ["explain", v["intent_id"], "--report", str(copy)], env=WIDE)
    assert out.exit_code == 0, out.output
    assert f"[etf] {v['intent_reason']}" in out.output
    assert "[bold]cut[/bold]" in out.output
