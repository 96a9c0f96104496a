"""The data commands as a user runs them, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app

runner = CliRunner()


def flat(output: str) -> str:
    """Table text with borders and wrapping removed."""
    return re.sub(r"[│┃\s]+", " ", output)


CLOSED = "http://127.0.0.1:9"  # nothing listens there: a connection error, like a machine without network


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_DATA__DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    for name in ("YFINANCE", "CCXT", "FRED"):
        monkeypatch.setenv(f"HFLITE_{name}_BASE_URL", CLOSED)
    monkeypatch.delenv("FRED_API_KEY", raising=False)
    return tmp_path


@pytest.mark.parametrize("command", ["update", "fetch", "news", "check", "archive", "versions"])
def test_every_data_command_explains_itself_with_an_example(command):
    result = runner.invoke(app, ["data", command, "--help"])
    assert result.exit_code == 0 and "Example" in result.output


def test_update_offline_keeps_the_embedded_sample_and_says_so(env: Path):
    config = env / "c.toml"
    config.write_text('[data.update]\nsymbols = ["SPY", "BTC-USD"]\nintraday = []\nseries = ["DGS10"]\n')
    result = runner.invoke(app, ["data", "update", "--config", str(config)])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "offline: yfinance: connection failed" in text
    assert "keeps its data for SPY (last bar 2026-03-27 00:00)" in text
    assert "set FRED_API_KEY" in text  # the series provider needs a key: named, not fatal
    assert "3 item(s) skipped (offline or no key)" in text


def test_fetch_refuses_a_call_without_symbols_or_series(env: Path):
    result = runner.invoke(app, ["data", "fetch", "--provider", "yfinance"])
    assert result.exit_code == 2 and "give --symbols or --series" in result.output


def test_check_reports_the_sample_and_writes_html(env: Path):
    result = runner.invoke(app, ["data", "check", "--html", str(env / "q.html")])
    assert result.exit_code == 0, result.output
    assert "EURUSD" in result.output and (env / "q.html").is_file()
    assert "ohlc_inconsistent" in (env / "q.html").read_text()


def test_versions_lists_the_current_hash(env: Path):
    result = runner.invoke(app, ["data", "versions", "SPY"])
    assert result.exit_code == 0, result.output
    assert "current" in result.output and "bars/SPY/1d" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--provider", "ccxt", "--exchange", "binance", "--symbols", "BTC/USDT", "--timeframe", "1h"],
        ["--provider", "yfinance", "--symbols", "SPY,AAPL", "--start", "2010-01-01"],
    ],
)
def test_fetch_offline_says_so_and_keeps_the_data(env: Path, args):
    result = runner.invoke(app, ["data", "fetch", *args])
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "offline" in text and "skipped" in text


def test_the_example_data_config_is_valid():
    from hflite.config import load_data_settings
    from tests.conftest import REPO

    data = load_data_settings(REPO / "configs" / "data.toml")
    assert len(data.update.symbols) == 25 and data.update.intraday[0].exchange == "binance"
    assert data.update.news_provider == "finnhub" and "FEDFUNDS" in data.update.series
