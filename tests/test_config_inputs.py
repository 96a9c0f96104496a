"""Bad config input gets one clear line, never a traceback and never a silent default."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.config import ConfigError, load_data_settings, load_llm_settings, load_settings
from tests.conftest import REPO
from tests.test_config import GOOD


def write(tmp_path: Path, text: str | bytes, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize(
    "loader", [load_settings, load_data_settings, load_llm_settings], ids=["run", "data", "llm"]
)
def test_a_binary_config_file_is_named_in_one_line(tmp_path, loader):
    path = write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError) as exc:
        loader(path)
    assert str(exc.value) == f"{path}: not a UTF-8 text file (byte 0x89 at offset 0): a config is TOML text"


def test_a_latin1_config_file_names_the_offending_byte(tmp_path):
    path = write(tmp_path, GOOD.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 0xe9 at offset \d+\)"):
        load_settings(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("inf", "config error: run.initial_cash: must be a finite number (got inf)"),
        ("nan", "config error: run.initial_cash: must be a finite number (got nan)"),
        ("-inf", "config error: run.initial_cash: must be a finite number (got -inf)"),
        ("1e308", "config error: run.initial_cash: Input should be less than or equal to 1000000000000"),
        ("1e400", "config error: run.initial_cash: must be a finite number (got inf)"),
    ],
)
def test_non_finite_and_absurd_initial_cash_is_refused(tmp_path, value, message):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, GOOD.replace("[strategy]", f"initial_cash = {value}\n\n[strategy]")))
    assert str(exc.value).splitlines()[0].startswith(message)


def test_a_set_override_of_1e400_is_refused():
    with pytest.raises(ConfigError, match=r"run.initial_cash: must be a finite number \(got inf\)"):
        load_settings(REPO / "configs" / "demo.toml", {"run": {"initial_cash": math.inf}})


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("risk", "max_order_usd", "inf"),
        ("risk", "min_adv_usd", "nan"),
        ("risk.breakers", "sigma", "inf"),
        ("strategy", "stop_atr", "nan"),
        ("execution.slippage", "range_frac", "nan"),
    ],
)
def test_every_non_finite_number_anywhere_in_the_config_is_refused(tmp_path, section, key, value):
    text = (
        GOOD.replace('name = "trend"', f'name = "trend"\n{key} = {value}')
        if section == "strategy"
        else (GOOD + f"\n[{section}]\n{key} = {value}\n")
    )
    with pytest.raises(ConfigError, match=rf"config error: {section}.{key}: .*finite"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("risk", "max_order_usd", "1e15"),
        ("risk", "min_adv_usd", "1e20"),
        ("risk", "max_orders_per_minute", "10000000"),
    ],
)
def test_absurd_money_and_counts_are_refused(tmp_path, section, key, value):
    with pytest.raises(ConfigError, match=rf"config error: {section}.{key}: Input should be less than"):
        load_settings(write(tmp_path, GOOD + f"\n[{section}]\n{key} = {value}\n"))


def test_a_config_without_a_strategy_section_is_refused(tmp_path):
    text = GOOD.replace('[strategy]\nname = "trend"\n', "")
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, text))
    assert str(exc.value) == (
        "config error: strategy: missing: add a [strategy] section with name = trend, breakout, "
        "mean_reversion, tsmom, xsmom or ai_ensemble (or pass --strategy)"
    )


def test_a_strategy_section_without_a_name_is_refused(tmp_path):
    text = GOOD.replace('name = "trend"', "fast = 20")
    with pytest.raises(ConfigError, match=r"config error: strategy.name: missing: one of trend, breakout"):
        load_settings(write(tmp_path, text))


def test_backtest_with_no_arguments_points_to_config():
    result = CliRunner().invoke(app, ["backtest"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    out = result.output
    assert "Traceback" not in out
    assert (
        "error: config error: run: missing: pass --config FILE (e.g. configs/demo.toml), or give [run] "
        "symbols, start and end\nconfig error: strategy: missing: add a [strategy] section" in out
    )


def test_backtest_with_cash_nan_is_refused_in_one_line():
    result = CliRunner().invoke(
        app,
        ["backtest", "--config", str(REPO / "configs" / "demo.toml"), "--cash", "nan"],
        env={"COLUMNS": "300"},
    )
    assert result.exit_code == 2
    assert "run.initial_cash: must be a finite number (got nan)" in result.output
    assert "Traceback" not in result.output


def test_a_binary_config_on_the_command_line_gives_one_line(tmp_path):
    path = write(tmp_path, b"\x00\x01\x02\xff" * 10)
    result = CliRunner().invoke(app, ["backtest", "--config", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "not a UTF-8 text file" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_llm_check_refuses_a_timeout_that_is_not_a_positive_finite_number(value):
    result = CliRunner().invoke(app, ["llm", "check", "--timeout", value], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "expected a positive number of seconds" in result.output
    assert "Traceback" not in result.output
