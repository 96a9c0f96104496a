"""The data commands as a user runs them, offline."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hflite.cli import app
from hflite.data.sample import ensure_sample
from hflite.data.store import Store, arrow_to_frame, frame_to_arrow, write_parquet

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


# --- store integrity: refused in one line, repaired by `data check --repair` ----------------------------

REPAIR = "hflite data check --repair"


def _damage(path: Path) -> None:
    """Overwrite a partition file with random bytes (a bad disk, a stray copy)."""
    path.write_bytes(np.random.default_rng(5).bytes(path.stat().st_size))


def _edit(path: Path) -> None:
    """Edit a partition file in place: one close 100x (a fat finger in a notebook)."""
    frame = arrow_to_frame(pq.read_table(path))
    frame.loc[100, "close"] *= 100
    write_parquet(frame_to_arrow(frame), path)


def _file(store: Store, key: str) -> Path:
    return store.root / next(p for p in store.partitions() if p.key == key).path


def _one_line_error(result) -> str:
    """The one error line of a failed command (log lines of the sample import may precede it)."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and not any(line.startswith("error") for line in lines[:-1])
    return lines[-1]


BACKTEST = ["backtest", "--strategy", "trend", "--symbols", "SPY", "--start", "2015-01-02"]
BACKTEST += ["--end", "2016-12-30", "--set", "run.benchmarks=[]", "--set", "risk.profile=minimal"]


def test_a_backtest_on_an_edited_file_stops_in_one_line_naming_the_file_and_the_repair(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    spy = _file(store, "bars/SPY/1d")
    _edit(spy)

    line = _one_line_error(runner.invoke(app, BACKTEST, env={"COLUMNS": "2000"}))

    assert line.startswith(f"error: bars/SPY/1d: {spy} was changed after it was written")
    assert line.endswith(f"run `{REPAIR}`")


def test_a_rerun_on_a_damaged_pinned_version_stops_in_one_line(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    first = runner.invoke(app, [*BACKTEST, "--out", str(env / "first")])
    assert first.exit_code == 0, first.output
    spy = _file(store, "bars/SPY/1d")
    store.write_bars("SPY", "1d", store.read_bars("SPY").iloc[:-5], source="revision")
    _damage(spy)  # the pinned version, now a kept one

    line = _one_line_error(
        runner.invoke(app, ["backtest", "--rerun", str(env / "first")], env={"COLUMNS": "2000"})
    )

    assert line == f"error: bars/SPY/1d: {spy} is not a readable Parquet file; run `{REPAIR}`"


def test_check_refuses_a_damaged_store_and_names_each_file_and_the_repair(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    _damage(_file(store, "bars/SPY/1d"))
    _edit(_file(store, "bars/QQQ/1d"))

    result = runner.invoke(app, ["data", "check", "--html", str(env / "q.html")], env={"COLUMNS": "250"})

    assert result.exit_code == 1, result.output
    text = flat(result.output)
    qqq, spy = (_file(store, f"bars/{s}/1d").name for s in ("QQQ", "SPY"))
    assert f"bars/QQQ/1d content hash of {qqq} differs from the manifest" in text
    assert f"bars/SPY/1d unreadable {spy}: not a readable Parquet file" in text
    assert f"error: 2 damaged partition(s): run `{REPAIR}`" in text
    assert not (env / "q.html").exists()


def test_check_repair_restores_a_corrupted_and_an_edited_file_from_the_sample(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    versions = store.versions(["bars/SPY/1d", "bars/QQQ/1d"])
    _damage(_file(store, "bars/SPY/1d"))
    _edit(_file(store, "bars/QQQ/1d"))

    result = runner.invoke(
        app, ["data", "check", "--repair", "--html", str(env / "q.html")], env={"COLUMNS": "250"}
    )

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    qqq, spy = (versions[f"bars/{s}/1d"][:12] for s in ("QQQ", "SPY"))
    assert f"bars/QQQ/1d content hash of data.{qqq}.parquet differs from the manifest" in text
    assert f"re-fetched version {qqq} (unchanged)" in text
    assert f"bars/SPY/1d unreadable data.{spy}.parquet: not a readable Parquet file" in text
    assert f"re-fetched version {spy} (unchanged)" in text
    assert store.verify() == {} and store.versions(versions) == versions
    assert (env / "q.html").is_file()
    again = runner.invoke(app, ["data", "check", "--html", str(env / "q.html")])
    assert again.exit_code == 0 and "data repair" not in again.output


def test_check_repair_offline_says_it_cannot_and_how_to_re_fetch(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    sample_file = _file(store, "bars/SPY/1d")
    store.write_bars("SPY", "1d", store.read_bars("SPY").iloc[:-5], source="yfinance")
    _damage(_file(store, "bars/SPY/1d"))
    _damage(sample_file)  # the kept sample version is damaged too: nothing intact is left

    result = runner.invoke(
        app, ["data", "check", "--repair", "--html", str(env / "q.html")], env={"COLUMNS": "400"}
    )

    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert "dropped the damaged data of this kept version" in text
    assert "cannot repair bars/SPY/1d: no intact version retained and the re-fetch failed (offline" in text
    assert "re-fetch with `hflite data fetch --provider yfinance --symbols SPY --timeframe 1d`" in text
    assert not (env / "q.html").exists()


def test_check_passes_the_current_time_so_staleness_is_checked(env: Path, monkeypatch):
    import hflite.data.quality as quality

    seen = {}
    real = quality.check_store

    def spy_check(store, **kwargs):
        seen.update(kwargs)
        return real(store, **kwargs)

    monkeypatch.setattr(quality, "check_store", spy_check)
    result = runner.invoke(app, ["data", "check", "--html", str(env / "q.html")])

    assert result.exit_code == 0, result.output
    assert seen["now"].tzinfo is not None
    assert abs(seen["now"] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(minutes=5)


# --- store folders --------------------------------------------------------------------------------------


def test_a_data_dir_that_does_not_exist_is_an_error_not_a_new_store(env: Path):
    typo = env / "dta"

    line = _one_line_error(runner.invoke(app, ["data", "list", "--data-dir", str(typo)]))

    assert (
        line == f"error: --data-dir {typo}: no data store there; check the path, or pass --create to make one"
    )
    assert not typo.exists()


def test_create_makes_a_new_store_with_the_sample(env: Path):
    result = runner.invoke(app, ["data", "list", "--data-dir", str(env / "new"), "--create"])

    assert result.exit_code == 0, result.output
    assert "SPY" in result.output and (env / "new" / "manifest.json").is_file()


def test_the_configured_store_is_still_created_implicitly(env: Path):
    result = runner.invoke(app, ["data", "list"])

    assert result.exit_code == 0, result.output
    assert (env / "data" / "manifest.json").is_file()


@pytest.mark.parametrize("command", ["list", "update", "fetch", "news", "check", "archive", "versions"])
def test_every_data_command_with_a_data_dir_offers_create(command):
    result = runner.invoke(app, ["data", command, "--help"], env={"COLUMNS": "200"})
    assert "--create" in result.output


def test_a_store_folder_that_cannot_be_created_is_one_line_naming_it_and_the_reason(env: Path):
    line = _one_line_error(runner.invoke(app, ["data", "list", "--data-dir", "/proc/hflite", "--create"]))

    assert line == "error: cannot create the data store folder /proc/hflite: No such file or directory"


def test_a_backtest_whose_data_dir_cannot_be_created_is_one_line(env: Path, monkeypatch):
    monkeypatch.setenv("HFLITE_DATA__DIR", "/proc/hflite")

    line = _one_line_error(runner.invoke(app, BACKTEST))

    assert line == "error: cannot create the data store folder /proc/hflite: No such file or directory"


# --- archive --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("age", ["3", "3x", "-3y", "0y", "y"])
def test_archive_refuses_an_age_without_a_unit_in_one_line(env: Path, age):
    line = _one_line_error(runner.invoke(app, ["data", "archive", "--older-than", age]))

    assert line == f"error: --older-than: expected a number with a unit y, m or d, e.g. 3y, got '{age}'"


def test_archive_without_an_archive_path_says_how_to_set_one(env: Path):
    line = _one_line_error(runner.invoke(app, ["data", "archive", "--older-than", "3y"]))

    assert line.startswith("error: no archive path: set data.archive_dir")


def test_archive_to_a_folder_that_cannot_be_created_is_one_line(env: Path, monkeypatch):
    monkeypatch.setenv("HFLITE_DATA__ARCHIVE_DIR", "/proc/hflite-cold")

    line = _one_line_error(runner.invoke(app, ["data", "archive", "--older-than", "3y"]))

    assert line.startswith("error: cannot create the folder /proc/hflite-cold")
    assert line.endswith(": No such file or directory")


# --- update and fetch tables at 80 columns --------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["update", "--config", "c.toml", "--only", "bars"],
        ["fetch", "--provider", "yfinance", "--symbols", "SPY,AAPL"],
    ],
)
def test_update_and_fetch_tables_fit_80_columns_with_whole_headers_ids_and_dates(env: Path, args):
    (env / "c.toml").write_text('[data.update]\nsymbols = ["SPY", "AAPL"]\nintraday = []\nseries = []\n')

    result = runner.invoke(app, ["data", *args], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "status" in line)
    assert re.findall(r"[a-z]+", header) == ["item", "status", "rows", "message"]
    assert "bars SPY 1d (yfinance)" in result.output and "bars AAPL 1d (yfinance)" in result.output
    assert re.findall(r"\d{4}-\d\d-\d\d", result.output) == ["2026-03-27", "2024-12-06"]
    assert re.findall(r"│ +(\d+) │", result.output) == ["0", "0"]  # rows, right-aligned integers


def test_wide_shows_every_count_column(env: Path):
    result = runner.invoke(
        app, ["data", "fetch", "--provider", "yfinance", "--symbols", "SPY", "--wide"], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "status" in line)
    names = ["item", "status", "rows", "quarantined", "revisions", "gaps filled", "gaps recorded", "message"]
    assert [c.strip() for c in re.split(r"[┃│]", header) if c.strip()] == names


@pytest.mark.parametrize(("args", "wide"), [([], False), (["--wide"], True)])
def test_check_passes_wide_to_the_quality_table(env: Path, monkeypatch, args, wide):
    import hflite.data.quality as quality

    seen = {}
    real = quality.render_quality_table

    def spy_render(report, **kwargs):
        seen.update(kwargs)
        return real(report, **kwargs)

    monkeypatch.setattr(quality, "render_quality_table", spy_render)
    result = runner.invoke(app, ["data", "check", "--html", str(env / "q.html"), *args])

    assert result.exit_code == 0, result.output
    assert seen == {"wide": wide}


def test_an_update_on_a_damaged_partition_fails_that_item_and_goes_on_with_the_others(env: Path):
    store = Store(env / "data")
    ensure_sample(store)
    spy = _file(store, "bars/SPY/1d")
    _damage(spy)
    (env / "c.toml").write_text('[data.update]\nsymbols = ["SPY", "TLT"]\nintraday = []\nseries = []\n')

    result = runner.invoke(app, ["data", "update", "--config", "c.toml"], env={"COLUMNS": "2000"})

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 3}
    spy_row = rows["bars SPY 1d (yfinance)"]
    assert "failed" in spy_row
    assert f"bars/SPY/1d: {spy} is not a readable Parquet file; run `{REPAIR}`" in spy_row
    assert "skipped" in rows["bars TLT 1d (yfinance)"]


@pytest.mark.parametrize("command", [["features", "build"], ["train", "--model", "linear"]])
def test_the_ai_commands_on_a_damaged_partition_stop_in_one_line(env: Path, command):
    store = Store(env / "data")
    ensure_sample(store)
    spy = _file(store, "bars/SPY/1d")
    _damage(spy)
    (env / "ai.toml").write_text(
        '[run]\nsymbols = ["SPY"]\nstart = "2019-01-02"\nend = "2019-12-31"\n'
        f'[ai]\nregistry_dir = "{env / "models"}"\n'
    )

    result = runner.invoke(app, [*command, "--config", "ai.toml"], env={"COLUMNS": "2000"})

    assert _one_line_error(result) == (
        f"error: bars/SPY/1d: {spy} is not a readable Parquet file; run `{REPAIR}`"
    )
