"""A run records the data versions it read and can be re-run on them after the store has moved on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from hflite.cli import app
from hflite.data.sample import ensure_sample
from hflite.data.store import Store

runner = CliRunner()


def final_equity(folder: Path) -> float:
    return json.loads((folder / "metrics.json").read_text())["metrics"]["final_equity"]


def test_a_rerun_reads_the_recorded_versions_after_the_data_changed(tmp_path: Path, monkeypatch):
    store = Store(tmp_path / "data")
    ensure_sample(store)
    monkeypatch.setenv("HFLITE_DATA__DIR", str(store.root))
    monkeypatch.chdir(tmp_path)
    args = [
        "backtest",
        "--strategy",
        "trend",
        "--symbols",
        "SPY",
        "--start",
        "2015-01-02",
        "--end",
        "2019-12-31",
        "--set",
        "run.benchmarks=[]",
        "--set",
        "strategy.fast=10",
    ]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    recorded = json.loads((tmp_path / "first" / "config.json").read_text())["data"]["pin"]
    assert recorded["bars/SPY/1d"] == store.version("bars/SPY/1d")

    # the vendor revises history: every SPY price 10% higher in the current version
    spy = store.read_bars("SPY", "1d")
    for c in ("open", "high", "low", "close"):
        spy[c] = spy[c] * 1.1
    store.write_bars("SPY", "1d", spy, asset_class="etf", source="revision")
    assert store.version("bars/SPY/1d") != recorded["bars/SPY/1d"]

    runner.invoke(app, [*args, "--out", str(tmp_path / "fresh")])
    rerun = runner.invoke(
        app, ["backtest", "--rerun", str(tmp_path / "first"), "--out", str(tmp_path / "again")]
    )
    assert rerun.exit_code == 0, rerun.output
    assert final_equity(tmp_path / "again") == final_equity(tmp_path / "first")
    assert final_equity(tmp_path / "fresh") != final_equity(tmp_path / "first")
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "again" / "trades.csv"), pd.read_csv(tmp_path / "first" / "trades.csv")
    )


def test_a_pinned_version_that_is_gone_is_named(tmp_path: Path, monkeypatch, sample_store):
    monkeypatch.setenv("HFLITE_DATA__DIR", str(sample_store.root))
    result = runner.invoke(
        app,
        [
            "backtest",
            "--strategy",
            "trend",
            "--symbols",
            "SPY",
            "--start",
            "2015-01-02",
            "--end",
            "2016-12-30",
            "--set",
            'data.pin={"bars/SPY/1d" = "deadbeefdeadbeef"}',
        ],
    )
    assert result.exit_code == 2
    assert "data.pin: bars/SPY/1d version deadbeefdead is not in the store" in re.sub(
        r"\s+", " ", result.output
    )


def test_provider_keys_are_read_from_dot_env(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    monkeypatch.setenv("HFLITE_DATA__DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HFLITE_FRED_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / ".env").write_text("FRED_API_KEY=from-dot-env-123\n")
    (tmp_path / "c.toml").write_text('[data.update]\nsymbols = []\nintraday = []\nseries = ["DGS10"]\n')
    result = runner.invoke(app, ["data", "update", "--config", "c.toml", "--only", "series"])
    text = re.sub(r"[│┃\s]+", " ", result.output)
    assert "offline: fred" in text and "FRED_API_KEY" not in text  # the key was found: it tried to connect
    assert "from-dot-env-123" not in result.output
    monkeypatch.delenv("FRED_API_KEY", raising=False)  # load_dotenv set it in this process
