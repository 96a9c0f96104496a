"""The LLM roles inside real runs on the sample data, against a local server speaking Ollama's API:
live calls recorded, replayed from a tape with identical decisions, the advisor's cuts, news
summaries feeding the investor view, every backend down, and the ``hflite llm`` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from hflite.ai.llm.journal import LLMJournal, write_tape
from hflite.cli import app
from hflite.engine.run import backtest
from tests import llm_servers
from tests.conftest import make_settings
from tests.llm_servers import FakeLLMServer, closed_port_url

ollama_server = llm_servers.ollama_server

EXPLAIN = {
    "stance": "bullish",
    "confidence": 6,
    "reasons": [1, 2],
    "risks": [],
}  # grounded: tenths, fact numbers
ADVISE = {"action": "scale", "scale": 5, "confidence": 7, "reasons": [1], "risks": []}
SUMMARY = {"score": 0.8, "confidence": 0.9, "reasons": ["record iPhone sales"]}


def by_role(body: Any) -> str:
    """The fake model's answer for the role its system prompt names."""
    system = body["messages"][0]["content"] if isinstance(body, dict) else ""
    if "portfolio manager" in system:
        return json.dumps(ADVISE)
    if "rate news" in system:
        return json.dumps(SUMMARY)
    return json.dumps(EXPLAIN)


def _settings(store, registry: Path, llm: dict[str, Any], **run: Any):
    return make_settings(
        store,
        run={
            "symbols": ["SPY", "AAPL"],
            "start": "2021-01-04",
            "end": "2022-06-30",
            "benchmarks": ["SPY"],
            **run,
        },
        strategy={"name": "ai_ensemble", "enter": 0.2, "min_confidence": 0.15},
        ai={
            "history_start": "2014-01-01",
            "registry_dir": str(registry),
            "model": {"kind": "linear"},
            "walkforward": {"retrain": "yearly", "train_years": 3, "min_train_rows": 300},
            "ablation": False,
        },
        llm={"backend": "ollama", **llm},
    )


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _live(store, registry, tmp: Path, server: FakeLLMServer, **llm: Any):
    cfg = {
        "mode": "live",
        "advise": True,
        "journal": str(tmp / "journal.sqlite"),
        "ollama": {"url": server.url, "model": "llama3.2:3b"},
        **llm,
    }
    return backtest(_settings(store, registry, cfg), store, run_id="llm-live")


@pytest.mark.slow
def test_live_run_records_every_call_and_a_replay_repeats_its_decisions(
    sample_store, registry, tmp_path: Path, ollama_server: FakeLLMServer
) -> None:
    ollama_server.reply_content = by_role
    live = _live(sample_store, registry, tmp_path, ollama_server)
    llm = live.llm
    stats = llm.stats
    n_exp, n_adv = len(llm.explanations), len(llm.advice)
    assert n_exp == len(live.verdicts) > 10  # explain scope "all": every decision
    assert n_adv > 3
    assert stats["outcomes"] == {"advise:live": n_adv, "explain:live": n_exp}
    assert stats["calls"] == n_exp + n_adv == len(ollama_server.requests)
    assert stats["fallbacks"] == {}
    # the model (llama3.2, cutoff 2023-12) is asked about 2021-22: every answer is flagged
    assert stats["training_cutoff"] == "2023-12-01" and stats["before_cutoff"] == n_exp + n_adv
    assert any("training cutoff" in w for w in live.warnings)
    # the advisor halved each entry risk approved, never more than risk allowed
    assert (llm.advice["scale_applied"] == 0.5).all()
    assert (llm.advice["qty_after"] <= llm.advice["qty_before"] * 0.5 + 1e-9).all()
    scaled = live.verdicts[live.verdicts["rules"].astype(str).str.contains("pm_scale")]
    assert len(scaled) == (llm.advice["qty_after"] < llm.advice["qty_before"]).sum() > 0
    # every call is in the journal, stamped with its decision's time; prompts hold nothing later
    journal = LLMJournal(tmp_path / "journal.sqlite")
    records = journal.records()
    assert len(records) == stats["calls"] and all(r.valid for r in records)
    assert {r.run_id for r in records} == {"llm-live"}
    first = llm.explanations.iloc[0]
    rec = journal.get(int(first["record_id"]))
    assert rec.as_of == pd.Timestamp(first["ts"]).isoformat() and rec.model == "llama3.2:3b"
    assert f"As of {pd.Timestamp(first['ts']):%Y-%m-%d %H:%M} UTC." in json.loads(rec.prompt)[1][1]
    tape = tmp_path / "tape.jsonl"
    assert write_tape(records, tape) == n_exp + n_adv
    journal.close()
    # replay from the tape only: no server, same decisions, twice
    replay_cfg = {
        "mode": "replay",
        "advise": True,
        "journal": str(tmp_path / "absent.sqlite"),
        "tapes": [str(tape)],
        "ollama": {"url": closed_port_url(), "model": "llama3.2:3b"},
    }
    runs = [backtest(_settings(sample_store, registry, replay_cfg), sample_store) for _ in range(2)]
    for run in runs:
        assert run.llm.stats["outcomes"] == {"advise:replay": n_adv, "explain:replay": n_exp}
        assert run.llm.stats["calls"] == 0
        pd.testing.assert_frame_equal(run.verdicts, live.verdicts)
        pd.testing.assert_series_equal(run.equity, live.equity)
    cols = ["intent_id", "stance", "reasons", "risks", "prompt_hash", "record_id"]
    pd.testing.assert_frame_equal(runs[0].llm.explanations[cols], runs[1].llm.explanations[cols])
    pd.testing.assert_frame_equal(runs[0].llm.advice, runs[1].llm.advice)


@pytest.mark.slow
def test_with_every_backend_down_the_run_completes_on_fallbacks(sample_store, registry, tmp_path) -> None:
    cfg = {
        "mode": "live",
        "advise": True,
        "fallbacks": ["openai"],
        "retries": 0,
        "timeout_s": 2,
        "journal": str(tmp_path / "journal.sqlite"),
        "ollama": {"url": closed_port_url()},
        "openai": {"url": closed_port_url("/v1")},
    }
    down = backtest(_settings(sample_store, registry, cfg), sample_store)
    off = backtest(_settings(sample_store, registry, {"mode": "off"}), sample_store)
    stats = down.llm.stats
    jobs = len(down.llm.explanations) + len(down.llm.advice)
    assert (
        sum(stats["fallbacks"].values())
        == jobs
        == stats["outcomes"]["explain:fallback"] + stats["outcomes"]["advise:fallback"]
    )
    assert stats["backends_down"] == ["ollama", "openai"]
    assert stats["calls"] == 4  # two refusals each, then both are skipped for the run
    assert (down.llm.explanations["source"] == "fallback").all()
    assert down.llm.explanations["text"].str.len().gt(20).all()  # the rule-based explanation
    assert any("backends down" in w for w in down.warnings)
    # a fallen-back advisor keeps what risk approved: the same decisions as with no LLM at all
    pd.testing.assert_frame_equal(down.verdicts, off.verdicts)
    assert off.llm is None


@pytest.mark.slow
def test_news_summaries_feed_the_investor_view(sample_store, registry, tmp_path, ollama_server) -> None:
    ollama_server.reply_content = by_role
    run = _live(
        sample_store,
        registry,
        tmp_path,
        ollama_server,
        summarise=True,
        explain=False,
        advise=False,
    )
    sums = run.llm.summaries
    assert len(sums) > 50 and set(sums["symbol"]) == {"AAPL"}  # SPY has no ticker news
    assert (sums["source"] == "live").all() and (sums["score"] == 0.8).all()
    assert sums["headlines"].sum() > len(sums)
    # time honesty: every summary's prompt lists headlines stamped at or before its bar
    bodies = [r.body for r in ollama_server.requests]
    assert all("As of" in b["messages"][1]["content"] for b in bodies)
    rows = run.ai.decisions
    aapl = rows[(rows["symbol"] == "AAPL") & rows["intent_id"].notna()]
    reasons = aapl["investor_reasons"].astype(str)
    assert reasons.str.contains("LLM news summary").any()


def _config(tmp: Path, store_dir: Path, registry: Path, llm: str) -> Path:
    path = tmp / "llm.toml"
    path.write_text(
        f"""
[run]
name = "llmcli"
symbols = ["SPY", "AAPL"]
start = "2021-01-04"
end = "2021-12-31"
benchmarks = ["SPY"]

[strategy]
name = "ai_ensemble"
enter = 0.2
min_confidence = 0.15

[data]
dir = "{store_dir}"

[report]
dir = "{tmp / "reports"}"

[ai]
history_start = "2014-01-01"
registry_dir = "{registry}"
ablation = false

[ai.model]
kind = "linear"

[ai.walkforward]
retrain = "yearly"
train_years = 3
min_train_rows = 300

[llm]
{llm}
"""
    )
    return path


@pytest.mark.slow
def test_cli_check_backtest_calls_and_export(sample_store, registry, tmp_path, ollama_server) -> None:
    ollama_server.reply_content = by_role
    journal = tmp_path / "journal.sqlite"
    llm = f'backend = "ollama"\njournal = "{journal}"\n[llm.ollama]\nurl = "{ollama_server.url}"\n'
    llm += 'model = "gemma3:270m"\n'
    cfg = _config(tmp_path, sample_store.root, registry, llm)
    runner = CliRunner()
    check = runner.invoke(
        app, ["llm", "check", "--config", str(cfg), "--backend", "ollama", "--wide"], env={"COLUMNS": "200"}
    )
    assert check.exit_code == 0, check.output
    assert "│ ollama  │ configured │" in check.output and "up" in check.output and "valid" in check.output
    assert "2000 calls, 1,000,000 tokens per run" in check.output
    assert "2024-08-01 for gemma3:270m" in check.output  # Gemma 3's training cutoff
    live = runner.invoke(app, ["backtest", "--config", str(cfg), "--llm", "live"], env={"COLUMNS": "200"})
    assert live.exit_code == 0, live.output
    calls = runner.invoke(
        app, ["llm", "calls", "--config", str(cfg), "--limit", "3", "--wide"], env={"COLUMNS": "200"}
    )
    assert calls.exit_code == 0 and "explain" in calls.output and "gemma3:270m" in calls.output
    tape = tmp_path / "tape.jsonl"
    out = runner.invoke(app, ["llm", "export", "--config", str(cfg), "--out", str(tape)])
    assert out.exit_code == 0 and tape.is_file(), out.output
    n = len(tape.read_text().splitlines())
    assert f"{n} replies written" in out.output and n > 5
    # replay on a machine with no server: every explanation comes from the tape
    cfg = _config(
        tmp_path,
        sample_store.root,
        registry,
        f'backend = "ollama"\njournal = "{tmp_path / "none.sqlite"}"\ntapes = ["{tape}"]\n'
        f'[llm.ollama]\nurl = "{closed_port_url()}"\nmodel = "gemma3:270m"\n',
    )
    replay = runner.invoke(app, ["backtest", "--config", str(cfg), "--llm", "replay"], env={"COLUMNS": "200"})
    assert replay.exit_code == 0, replay.output
    folder = max((tmp_path / "reports").iterdir(), key=lambda p: p.stat().st_mtime)
    summary = json.loads((folder / "llm_summary.json").read_text())
    assert summary["stats"]["outcomes"] == {"explain:replay": n}
    # live with the chain down: check says so and fails
    cfg.write_text(cfg.read_text().replace("[llm]\n", '[llm]\nmode = "live"\n'))
    down = runner.invoke(
        app, ["llm", "check", "--config", str(cfg), "--backend", "ollama"], env={"COLUMNS": "200"}
    )
    assert down.exit_code == 1 and "down" in down.output, down.output


def test_a_rerun_takes_the_key_from_the_environment_not_the_masked_report(
    sample_store, tmp_path, monkeypatch
) -> None:
    from hflite.cli import _rerun_settings
    from hflite.config import redacted

    monkeypatch.setenv("HFLITE_LLM__OPENAI__API_KEY", "sk-test-123")
    settings = make_settings(sample_store, llm={"backend": "openai"})
    assert settings.llm.openai.api_key.get_secret_value() == "sk-test-123"
    recorded = redacted(settings)
    assert recorded["llm"]["openai"]["api_key"] == "**********"
    assert "sk-test-123" not in json.dumps(recorded)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    again = _rerun_settings(tmp_path, None)
    assert again.llm.openai.api_key.get_secret_value() == "sk-test-123"


@pytest.mark.slow
def test_the_ai_demo_replays_its_committed_tape(sample_store, tmp_path: Path, monkeypatch) -> None:
    """configs/ai.toml as a user runs it: every explanation comes from configs/tapes/ai.jsonl. A change
    to the decisions or to the prompts makes this fail: record the tape again (docs/llm.md)."""
    from hflite.config import load_settings

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the config's paths (the tape) are relative to the repository
    overrides = {
        "data": {"dir": str(sample_store.root)},
        "ai": {"registry_dir": str(tmp_path / "models")},
        "llm": {"journal": str(tmp_path / "none.sqlite")},
    }
    settings = load_settings(root / "configs" / "ai.toml", overrides)
    result = backtest(settings, sample_store)
    stats = result.llm.stats
    entries = result.verdicts[(result.verdicts["kind"] == "entry") & (result.verdicts["qty_approved"] > 0)]
    assert stats["outcomes"] == {"explain:replay": len(entries)}, stats["fallbacks"]
    assert stats["calls"] == 0 and stats["model"] == "gemma-3-270m-q4_k_m"
    before = (pd.to_datetime(entries["ts"], utc=True) < pd.Timestamp("2024-08-01", tz="UTC")).sum()
    assert stats["before_cutoff"] == before > 0  # Gemma 3's training data ends 2024-08
    assert (result.llm.explanations["source"] == "replay").all()


def test_a_malformed_tape_or_journal_stops_the_run_with_a_clear_error(
    sample_store, registry, tmp_path
) -> None:
    from hflite.config import ConfigError

    tape = tmp_path / "bad.jsonl"
    tape.write_text("not json\n")
    cfg = {"mode": "replay", "tapes": [str(tape)], "journal": str(tmp_path / "none.sqlite")}
    with pytest.raises(ConfigError, match=r"llm.tapes: .*bad.jsonl:1: not a tape record"):
        backtest(_settings(sample_store, registry, cfg), sample_store)
    journal = tmp_path / "junk.sqlite"
    journal.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match="llm.journal: .*junk.sqlite is not a readable journal"):
        backtest(_settings(sample_store, registry, {"mode": "replay", "journal": str(journal)}), sample_store)


@pytest.mark.slow
def test_the_live_runtime_runs_the_same_advisor_and_explanations_as_the_backtest(
    sample_store, registry, tmp_path: Path, ollama_server: FakeLLMServer
) -> None:
    """One engine: the replay runtime (asyncio, bar by bar) asks the advisor the same questions at the
    same bars and reaches the same decisions as the backtest."""
    import asyncio

    from hflite.engine.replay import replay

    ollama_server.reply_content = by_role
    cfg = {
        "mode": "live",
        "advise": True,
        "journal": str(tmp_path / "journal.sqlite"),
        "ollama": {"url": ollama_server.url, "model": "llama3.2:3b"},
    }
    settings = _settings(sample_store, registry, cfg)
    batch = backtest(settings, sample_store)
    live = asyncio.run(replay(settings, sample_store, journal_path=Path("-")))
    pd.testing.assert_frame_equal(live.verdicts, batch.verdicts)
    assert len(live.llm.advice) == len(batch.llm.advice) > 0
    pd.testing.assert_series_equal(live.llm.advice["qty_after"], batch.llm.advice["qty_after"])
    cols = ["intent_id", "prompt_hash", "stance", "reasons"]
    pd.testing.assert_frame_equal(live.llm.explanations[cols], batch.llm.explanations[cols])
