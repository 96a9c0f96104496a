"""What a new user meets in the AI and LLM commands at 80 columns: tables whose headers, ids and dates
stay whole (``--wide`` for every column), counts as whole numbers, model ids to name, a clear word for
an unknown model kind, and help text that keeps its ``[llm]``."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from hflite.ai.llm.journal import CallRecord, LLMJournal
from hflite.ai.models import MODEL_KINDS
from hflite.ai.registry import ModelRegistry
from hflite.ai.walkforward import WalkForwardConfig, build_panel, walk_forward
from hflite.cli import app
from hflite.tables import Col, build_table, cell
from tests import llm_servers
from tests.llm_servers import closed_port_url
from tests.test_models import synthetic_frames

ollama_server = llm_servers.ollama_server
NARROW = {"COLUMNS": "80"}
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
GROUNDED_EXPLAIN = {"stance": "bullish", "confidence": 6, "reasons": [1, 2], "risks": []}


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(app, list(args), env=env or NARROW)
    assert result.exit_code == 0, result.output
    return result.output


def header_cells(output: str) -> list[str]:
    """The header cells of the first table in ``output`` (the row between the ┏ and ┡ rules)."""
    lines = output.splitlines()
    top = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┏"))
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("┡"))
    rows = [line.strip().strip("┃").split("┃") for line in lines[top + 1 : end]]
    assert len(rows) == 1, f"a header wrapped onto {len(rows)} lines:\n{output}"
    return [c.strip() for c in rows[0]]


def date_fragments(output: str) -> list[str]:
    """Cells that start a date but do not hold all of it: a date wrapped inside its cell."""
    cells = (c.strip() for line in output.splitlines() for c in re.split("[│┃]", line))
    return [c for c in cells if re.match(r"\d{4}-", c) and not DATE.match(c)]


def assert_fits(output: str, headers: list[str], width: int = 80) -> None:
    assert header_cells(output) == headers
    assert date_fragments(output) == []
    table = [line for line in output.splitlines() if line.lstrip()[:1] in ("┏", "┃", "┡", "│", "└")]
    assert max(len(line) for line in table) <= width


# -- the table helper ----------------------------------------------------------------------------


def test_the_table_helper_names_are_pinned() -> None:
    from hflite import tables

    assert sorted(tables.__all__) == ["Col", "Kind", "build_table", "cell", "print_table"]


def test_counts_print_as_whole_numbers() -> None:
    assert [cell(28.0, "count"), cell(np.int64(1200), "count"), cell(3, "count")] == ["28", "1200", "3"]


def test_numbers_print_with_their_digits() -> None:
    assert cell(0.75812, "number") == "0.758"
    assert cell(11565.43, "number", digits=1) == "11565.4"


def test_dates_print_as_days_and_times_as_utc_minutes() -> None:
    ts = pd.Timestamp("2024-06-03 20:15:42", tz="America/New_York")
    assert cell(ts, "date") == "2024-06-04"
    assert cell(ts, "time") == "2024-06-04 00:15"
    assert cell("2021-01-05T21:00:00+00:00", "time") == "2021-01-05 21:00"


def test_missing_values_print_as_a_dash() -> None:
    assert [cell(None, "count"), cell(float("nan"), "number"), cell(pd.NaT, "date")] == ["—", "—", "—"]


def render(table: object, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width).print(table, crop=False)
    return out.getvalue()


COLS = [Col("id", "id"), Col("n", "count"), Col("day", "date", default=False), Col("note", "text")]
ROWS = [{"id": "model-one", "n": 2.0, "day": pd.Timestamp("2024-01-02"), "note": "a [llm] note"}]


def test_a_table_shows_its_default_columns_and_names_the_rest_in_a_caption() -> None:
    output = render(build_table(COLS, ROWS, width=80))
    assert header_cells(output) == ["id", "n", "note"]
    assert "1 more column: --wide" in output
    assert "a [llm] note" in output  # cells are text, not markup


def test_a_wide_table_shows_every_column() -> None:
    output = render(build_table(COLS, ROWS, wide=True, width=80))
    assert header_cells(output) == ["id", "n", "day", "note"]
    assert "2024-01-02" in output and "--wide" not in output


def test_columns_that_do_not_fit_are_dropped_from_the_right_not_cut() -> None:
    cols = [Col("id", "id"), *(Col(f"metric_{i}", "number") for i in range(8)), Col("note", "text")]
    rows = [{"id": "x" * 40, "note": "words " * 20, **{f"metric_{i}": 0.5 for i in range(8)}}]
    output = render(build_table(cols, rows, width=80))
    assert header_cells(output) == ["id", "metric_0", "metric_1", "note"]
    assert "x" * 40 in output and "6 more columns: --wide" in output
    assert max(len(line) for line in output.splitlines()) <= 80


def test_a_wide_table_is_as_wide_as_its_cells_so_nothing_wraps() -> None:
    cols = [Col("id", "id"), Col("note", "text")]
    rows = [{"id": "model-one", "note": "word " * 30}]
    output = render(build_table(cols, rows, wide=True, width=80))
    assert ("word " * 29 + "word") in output
    assert len(output.splitlines()) == 5  # top rule, header, rule, one row, bottom rule


# -- hflite models list --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one quick linear walk-forward on synthetic bars (four windows)."""
    root = tmp_path_factory.mktemp("models")
    panel = build_panel(*synthetic_frames(n_symbols=2, n_bars=420, persist=0.6), horizon=2)
    config = WalkForwardConfig(horizon=2, train_years=0.5, min_train_rows=100, retrain="quarterly")
    walk_forward(panel, "linear", {}, config, registry=ModelRegistry(root, mlflow=False))
    return root


def test_models_list_fits_80_columns_with_the_full_id_first(registry: Path) -> None:
    output = run("models", "list", "--registry", str(registry))
    assert_fits(output, ["id", "test_start", "hit_rate", "auc"])
    frame = ModelRegistry(registry).list()
    for model_id, start in zip(frame["id"], frame["test_start"], strict=True):
        assert re.search(rf"│ {re.escape(model_id)} +│ {start:%Y-%m-%d} │", output)


def test_models_list_wide_shows_every_column_whole_with_counts_as_integers(registry: Path) -> None:
    output = run("models", "list", "--registry", str(registry), "--wide")
    headers = header_cells(output)
    assert headers[:7] == ["id", "kind", "created", "train_start", "train_end", "test_start", "test_end"]
    assert {"n_test", "n_scored", "n_features", "auc", "brier", "ic", "run", "data_version"} <= set(headers)
    assert date_fragments(output) == []
    assert not re.search(r"\b\d+\.000\b", output)
    frame = ModelRegistry(registry).list()
    lines = output.splitlines()
    row = lines[next(i for i, line in enumerate(lines) if line.startswith("┡")) + 1].strip("│").split("│")
    cells = dict(zip(headers, (c.strip() for c in row), strict=True))
    first = frame.iloc[0]
    assert cells["id"] == first["id"]
    assert cells["n_train"] == str(int(first["n_train"])) and cells["n_features"] == "4"
    assert cells["created"] == f"{first['created']:%Y-%m-%d %H:%M}"


def test_models_list_names_the_kinds_when_given_an_unknown_one(registry: Path) -> None:
    result = CliRunner().invoke(app, ["models", "list", "--registry", str(registry), "--kind", "nosuch"])
    assert result.exit_code == 2
    expected = f"error: unknown kind 'nosuch': expected one of {', '.join(MODEL_KINDS)}"
    assert expected in result.output.splitlines()
    assert "linear, random_forest, lightgbm, xgboost, lstm, gru" in expected


def test_models_list_says_when_a_known_kind_has_no_models(registry: Path) -> None:
    output = run("models", "list", "--registry", str(registry), "--kind", "lightgbm")
    assert output.strip() == f"no lightgbm models in {registry}"


def test_models_list_of_a_missing_registry_does_not_create_it(tmp_path: Path) -> None:
    output = run("models", "list", "--registry", str(tmp_path / "nowhere"), env={"COLUMNS": "200"})
    assert f"no models in {tmp_path / 'nowhere'}" in output
    assert not (tmp_path / "nowhere").exists()


# -- hflite train --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_config(sample_store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    cfg = tmp / "ai.toml"
    cfg.write_text(
        f"""
[run]
symbols = ["SPY", "TLT"]
start = "2019-01-02"
end = "2019-12-31"
[data]
dir = "{sample_store.root}"
[ai]
history_start = "2014-01-01"
registry_dir = "{tmp / "models"}"
[ai.walkforward]
retrain = "quarterly"
train_years = 3
min_train_rows = 300
""",
        encoding="utf-8",
    )
    return cfg


@pytest.mark.slow
def test_train_prints_its_windows_in_80_columns(train_config: Path) -> None:
    output = run("train", "--model", "linear", "--config", str(train_config))
    assert_fits(output, ["window", "test_start", "test_end", "n_test", "hit_rate", "auc", "ic"])
    assert re.search(r"│ +0 │ 2019-01-0\d │ 2019-0[34]-\d\d │ +\d+ │", output)
    assert re.search(
        r"n_windows 4, n_predictions \d+, n_scored \d+, hit_rate 0\.\d{3}", " ".join(output.split())
    )
    hint = next(line for line in output.splitlines() if line.startswith("Models: "))
    assert re.fullmatch(r"Models: hflite models list --run linear-\S+ --registry \S+models", hint)


@pytest.mark.slow
def test_train_says_why_it_cannot_train_without_an_exception_name(train_config: Path) -> None:
    args = ["train", "--model", "linear", "--config", str(train_config)]
    result = CliRunner().invoke(app, [*args, "--set", "ai.walkforward.min_train_rows=100000"], env=NARROW)
    assert result.exit_code == 2
    error = result.output.splitlines()[-1]  # after the logged warnings of each window skipped
    assert error.startswith("error: no walk-forward window has 100000 training rows: the panel spans 2014-")
    assert "ValueError" not in result.output


@pytest.mark.slow
def test_train_wide_prints_every_window_column_whole(train_config: Path) -> None:
    output = run("train", "--model", "linear", "--config", str(train_config), "--wide")
    headers = header_cells(output)
    assert headers[:4] == ["window", "model_id", "train_start", "train_end"]
    assert {"n_train", "n_scored", "brier", "log_loss", "fwd_ret_up", "fwd_ret_down"} <= set(headers)
    assert date_fragments(output) == []
    assert not re.search(r"\b\d+\.000\b", output)


# -- hflite llm check and calls ------------------------------------------------------------------


def llm_config(tmp_path: Path, ollama_url: str) -> Path:
    cfg = tmp_path / "llm.toml"
    cfg.write_text(
        f'[llm]\nbackend = "ollama"\njournal = "{tmp_path / "journal.sqlite"}"\n'
        f'[llm.ollama]\nurl = "{ollama_url}"\nmodel = "gemma3:270m"\n'
        f'[llm.openai]\nurl = "{closed_port_url()}"\nmodel = "gpt-4o-mini"\n',
        encoding="utf-8",
    )
    return cfg


CHECK_HEADERS = ["backend", "model", "status", "ms", "reply", "detail"]


def test_llm_check_fits_80_columns(tmp_path: Path, ollama_server) -> None:
    ollama_server.reply_content = json.dumps(GROUNDED_EXPLAIN)
    cfg = llm_config(tmp_path, ollama_server.url)
    up = run("llm", "check", "--config", str(cfg), "--backend", "ollama")
    assert_fits(up, CHECK_HEADERS)
    assert re.search(r"│ ollama +│ gemma3:270m +│ up +│ +\d+ │ valid │", up)
    down = run("llm", "check", "--config", str(cfg), "--backend", "openai")
    assert_fits(down, CHECK_HEADERS)
    assert re.search(r"│ openai +│ gpt-4o-mini +│ down +│ +— │ — +│ openai: GET", down)


def test_llm_check_wide_shows_where_each_backend_is_and_what_it_offers(tmp_path: Path, ollama_server) -> None:
    ollama_server.reply_content = json.dumps(GROUNDED_EXPLAIN)
    cfg = llm_config(tmp_path, ollama_server.url)
    output = run("llm", "check", "--config", str(cfg), "--backend", "ollama", "--wide")
    assert header_cells(output) == [
        "backend", "chain", "where", "model", "status", "offers", "ms", "reply", "tokens/s", "detail"
    ]  # fmt: skip
    assert f"│ ollama  │ configured │ {ollama_server.url} │ gemma3:270m │ up     │" in output


def test_llm_calls_fits_80_columns_with_whole_times(tmp_path: Path) -> None:
    cfg = llm_config(tmp_path, closed_port_url())
    journal = LLMJournal(tmp_path / "journal.sqlite")
    for day in (4, 5):
        journal.record(
            CallRecord(
                role="explain",
                backend="ollama",
                model="gemma3:270m",
                prompt_hash=f"h{day}",
                as_of=f"2021-01-0{day}T21:00:00+00:00",
                reply=json.dumps(GROUNDED_EXPLAIN),
                valid=True,
                subject=f"SPY entry 2021-01-0{day}",
                latency_ms=812.4,
                prompt_tokens=300,
                completion_tokens=28,
            )
        )
    journal.close()
    output = run("llm", "calls", "--config", str(cfg))
    assert_fits(output, ["id", "role", "subject", "as of", "ok", "reply"])
    assert re.search(r"│ +2 │ explain │ SPY entry 2021-01-05 │ 2021-01-05 21:00 │ yes │", output)
    wide = run("llm", "calls", "--config", str(cfg), "--wide")
    assert {"backend/model", "ms", "tokens"} <= set(header_cells(wide))
    assert re.search(r"│ +812 │ +328 │", wide) and not re.search(r"\b\d+\.000\b", wide)


# -- help text -----------------------------------------------------------------------------------


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every group and command under ``group`` (typer's own click objects), with its path."""
    found: list[tuple[tuple[str, ...], Any]] = [(path, group)]
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            found += commands(cmd, (*path, name))
        else:
            found.append(((*path, name), cmd))
    return found


def bracketed(cmd: Any) -> set[str]:
    """The ``[word]`` spans of a command's help and options that rich markup would read as a tag."""
    texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
    return {f"[{m}]" for text in texts for m in re.findall(r"\[([a-z#/@][^\[\]]*)\]", text)}


HELP = [(path, tags) for path, cmd in commands(typer.main.get_command(app)) if (tags := bracketed(cmd))]


def test_some_help_text_names_a_config_section_in_brackets() -> None:
    assert {path for path, _ in HELP} >= {("backtest",), ("llm", "check"), ("llm", "export")}


@pytest.mark.parametrize(("path", "tags"), HELP, ids=[" ".join(p) for p, _ in HELP])
def test_help_shows_bracketed_config_sections(path: tuple[str, ...], tags: set[str]) -> None:
    output = run(*path, "--help", env={"COLUMNS": "200"})
    for tag in tags:
        assert tag in output
