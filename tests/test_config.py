"""Configuration: every bad input stops the run with one line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from hflite.config import ConfigError, load_settings, parse_overrides
from hflite.engine.run import backtest, prepare
from tests.conftest import REPO, make_settings

GOOD = """
[run]
symbols = ["SPY"]
start = "2015-01-02"
end = "2016-12-30"

[strategy]
name = "trend"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_the_demo_config_is_valid():
    s = load_settings(REPO / "configs" / "demo.toml")
    assert s.strategy.name == "trend" and s.strategy.params()["fast"] == 20


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "[risk]\nrisk_pct = -1\n",
            "config error: risk.risk_pct: Input should be greater than or equal to 0.25 (got -1)",
        ),
        ("[risk]\nrisk_pcnt = 1\n", "config error: risk.risk_pcnt: unknown key"),
        ("[rsik]\nrisk_pct = 1\n", "config error: rsik: unknown key"),
        ("fastt = 3\n", "config error: strategy.fastt: unknown key"),
        (
            "fast = 60\nslow = 50\n",
            "config error: strategy: fast (60) must be smaller",
        ),
        (
            "[execution]\nmax_volume_share = 2\n",
            "config error: execution.max_volume_share: Input should be less",
        ),
    ],
)
def test_bad_values_name_the_field(tmp_path, extra, message):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, GOOD + extra))
    assert str(exc.value).splitlines()[0].startswith(message)


def test_an_end_before_the_start_is_refused(tmp_path):
    text = GOOD.replace('end = "2016-12-30"', 'end = "2014-12-30"')
    with pytest.raises(ConfigError, match=r"config error: run: end \(2014-12-30\) must be after start"):
        load_settings(write(tmp_path, text))


def test_a_missing_file_and_bad_toml_are_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[run\n"))


def test_set_overrides_parse_toml_values_and_nest():
    assert parse_overrides(
        ["strategy.fast=20", "strategy.ma=ema", 'run.symbols=["SPY","TLT"]', "strategy.trailing=true"]
    ) == {"strategy": {"fast": 20, "ma": "ema", "trailing": True}, "run": {"symbols": ["SPY", "TLT"]}}
    with pytest.raises(ConfigError, match="needs a section"):
        parse_overrides(["fast=3"])


def test_precedence_is_set_then_environment_then_file(tmp_path, monkeypatch):
    path = write(tmp_path, GOOD + "[risk]\nrisk_pct = 0.3\nmax_position_pct = 10\n")
    monkeypatch.setenv("HFLITE_RISK__RISK_PCT", "0.7")
    monkeypatch.setenv("HFLITE_RISK__MAX_POSITION_PCT", "15")
    s = load_settings(path, {"risk": {"risk_pct": 0.9}})
    assert s.risk.risk_pct == 0.9  # --set beats the environment
    assert s.risk.max_position_pct == 15  # the environment beats the file


def test_an_unknown_symbol_is_named(sample_store):
    s = make_settings(sample_store, run={"symbols": ["SPY", "NOPE"]})
    with pytest.raises(ConfigError, match="config error: run.symbols: unknown instrument 'NOPE'"):
        prepare(s, sample_store)


def test_a_symbol_missing_from_the_store_is_named(tmp_path):
    from hflite.data.store import Store

    empty = Store(tmp_path / "empty")
    s = make_settings(empty, run={"symbols": ["SPY"]})
    with pytest.raises(ConfigError, match=r"run.symbols: no 1d bars for SPY in the store .*hflite data list"):
        prepare(s, empty)


def test_a_window_before_the_data_starts_is_refused(sample_store):
    s = make_settings(sample_store, run={"symbols": ["ETH-USD"], "start": "2015-01-02"})
    with pytest.raises(
        ConfigError, match="run.start: ETH-USD 1d data starts 2017-11-09, after the run's start"
    ):
        prepare(s, sample_store)


def test_a_window_after_the_data_ends_is_refused(sample_store):
    s = make_settings(sample_store, run={"symbols": ["AAPL"], "start": "2024-06-03", "end": "2025-06-30"})
    with pytest.raises(ConfigError, match="run.end: AAPL 1d data ends 2024-12-06"):
        prepare(s, sample_store)


def test_a_window_with_no_bars_is_refused(sample_store):
    s = make_settings(sample_store, run={"symbols": ["SPY"], "start": "2030-01-01", "end": "2030-02-01"})
    with pytest.raises(ConfigError, match="run.start: SPY has no 1d bars on or after 2030-01-01"):
        backtest(s, sample_store, run_id="x")
