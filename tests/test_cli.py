"""The command line as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from tests.conftest import REPO

runner = CliRunner()


@pytest.fixture
def env(sample_store, monkeypatch, tmp_path):
    monkeypatch.setenv("HFLITE_DATA__DIR", str(sample_store.root))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "command",
    [[], ["backtest"], ["replay"], ["data"], ["data", "list"], ["explain"], ["risk"], ["risk", "status"]],
)
def test_every_command_explains_itself_with_an_example(command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_backtest_with_flags_and_set_writes_a_complete_report(env: Path):
    out = env / "reports" / "my-run"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--strategy",
            "trend",
            "--symbols",
            "SPY,TLT,GLD,BTC-USD,EURUSD",
            "--start",
            "2015-01-01",
            "--end",
            "2024-12-06",
            "--set",
            "strategy.fast=20",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Report:" in result.output and "Sharpe" in result.output
    for name in ("report.html", "trades.csv", "orders.csv", "equity.parquet", "metrics.json", "config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["strategy"]["fast"] == 20 and config["run"]["symbols"][3] == "BTC-USD"


def test_a_config_error_is_one_clear_line_and_exit_code_2(env: Path):
    result = runner.invoke(
        app, ["backtest", "--config", str(REPO / "configs" / "demo.toml"), "--set", "risk.risk_pct=-1"]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())  # the terminal may wrap the line
    assert "config error: risk.risk_pct: Input should be greater than or equal to 0.25 (got -1)" in text
    assert "Traceback" not in result.output


def test_an_unknown_set_key_names_it(env: Path):
    result = runner.invoke(
        app, ["backtest", "--config", str(REPO / "configs" / "demo.toml"), "--set", "strategy.fastt=3"]
    )
    assert result.exit_code == 2 and "strategy.fastt: unknown key" in result.output


def test_replay_runs_the_live_runtime_and_reports(env: Path):
    out = env / "rp"
    result = runner.invoke(
        app,
        [
            "replay",
            "--config",
            str(REPO / "configs" / "demo.toml"),
            "--speed",
            "max",
            "--set",
            "run.start=2023-01-03",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file()


def test_replay_refuses_a_bad_speed(env: Path):
    result = runner.invoke(
        app, ["replay", "--config", str(REPO / "configs" / "demo.toml"), "--speed", "fast"]
    )
    assert result.exit_code == 2 and "--speed: expected 'max' or a positive number" in result.output


def test_data_list_shows_symbols_rows_and_versions(env: Path, sample_store, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    result = runner.invoke(app, ["data", "list", "--data-dir", str(sample_store.root)])
    assert result.exit_code == 0, result.output
    assert "SPY" in result.output and "6598" in result.output.replace(",", "")
    assert sample_store.version("bars/SPY/1d")[:12] in result.output
