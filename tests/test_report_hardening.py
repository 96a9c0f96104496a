"""Reports and ``hflite explain`` under stress: damaged report files, a report folder deleted while it is
written, benchmarks that do not depend on what the run trades, and a report page that reads at 1400 px."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import hflite.analytics.report as report_mod
from hflite.ai.walkforward import calibration_table
from hflite.analytics import benchmark_metrics, compute_metrics, run_metrics, summary_table, write_report
from hflite.analytics.report import ReportError, render_html
from hflite.cli import app
from hflite.engine.result import RunResult
from hflite.engine.run import backtest
from hflite.explain import TrailError, load_trail
from tests.conftest import make_settings

runner = CliRunner()
WIDE = {"COLUMNS": "200"}
START, END = "2019-01-02", "2019-12-06"  # END is a Friday: BTC-USD has a bar that day, stocks close it


def _run(store, symbols: list[str], run_id: str) -> RunResult:
    settings = make_settings(
        store,
        run={"symbols": symbols, "start": START, "end": END, "benchmarks": ["SPY", "BTC-USD"]},
        strategy={"name": "trend", "fast": 10, "slow": 40},
    )
    return backtest(settings, store, run_id=run_id)


@pytest.fixture(scope="module")
def stocks(sample_store) -> RunResult:
    """A run that holds no crypto: its timeline ends at the last stock close."""
    return _run(sample_store, ["SPY", "QQQ"], "stocks-run")


@pytest.fixture(scope="module")
def mixed(sample_store) -> RunResult:
    """A run that trades crypto too: its timeline ends at BTC-USD's last midnight close."""
    return _run(sample_store, ["SPY", "QQQ", "BTC-USD"], "mixed-run")


@pytest.fixture(scope="module")
def report(stocks: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reports") / "stocks-run"
    write_report(stocks, folder)
    return folder


# -- damaged report files: explain names the file and what is wrong ----------------------------------

#: Every file ``hflite explain`` reads. The AI and LLM ones only exist for runs that had them.
CSV_FILES = (
    "verdicts.csv",
    "orders.csv",
    "fills.csv",
    "trades.csv",
    "risk_checks.csv",
    "ai_decisions.csv",
    "llm_explanations.csv",
    "llm_advice.csv",
)
JSON_FILES = ("metrics.json", "config.json", "ai_summary.json", "llm_summary.json")


def _entry(result: RunResult) -> str:
    v = result.verdicts
    return str(v[(v["kind"] == "entry") & v["order_id"].notna()].iloc[0]["intent_id"])


@pytest.fixture
def full_report(report: Path, stocks: RunResult, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the report with the AI and LLM files too (a row for the entry explained)."""
    folder = tmp_path / "full"
    shutil.copytree(report, folder)
    ident = _entry(stocks)
    (folder / "ai_decisions.csv").write_text(f"intent_id,score\n{ident},0.5\n", encoding="utf-8")
    (folder / "ai_summary.json").write_text("{}", encoding="utf-8")
    for name in ("llm_explanations.csv", "llm_advice.csv"):
        (folder / name).write_text(f"intent_id,ts,stance\n{ident},,long\n", encoding="utf-8")
    (folder / "llm_summary.json").write_text('{"scope": "trades"}', encoding="utf-8")
    return folder, ident


def test_the_full_report_copy_explains_cleanly(full_report):
    folder, ident = full_report
    trail = load_trail(folder, ident)
    assert trail.ai is not None and trail.llm is not None and trail.advice is not None


@pytest.mark.parametrize("name", CSV_FILES + JSON_FILES)
def test_a_file_that_is_not_utf8_is_named_as_damaged(full_report, name):
    folder, ident = full_report
    (folder / name).write_bytes(
        b"intent_id\n\xff\xfe caf\xe9\n" if name.endswith(".csv") else b'{"a": "\xff"}'
    )
    with pytest.raises(TrailError, match=rf"damaged report file .*{name}: not UTF-8 text"):
        load_trail(folder, ident)


@pytest.mark.parametrize("name", CSV_FILES + JSON_FILES)
def test_an_empty_file_is_named_as_damaged(full_report, name):
    folder, ident = full_report
    (folder / name).write_bytes(b"")
    with pytest.raises(TrailError, match=rf"damaged report file .*{name}: empty"):
        load_trail(folder, ident)


@pytest.mark.parametrize(
    ("text", "what"), [('{"run_id": ', "not valid JSON"), ("[1, 2]", "not a JSON object")]
)
def test_a_json_file_that_is_cut_short_or_not_an_object_is_named_as_damaged(full_report, text, what):
    folder, ident = full_report
    (folder / "metrics.json").write_text(text, encoding="utf-8")
    with pytest.raises(TrailError, match=rf"metrics.json: {what}"):
        load_trail(folder, ident)


def test_a_verdicts_file_without_its_time_column_is_named_as_damaged(full_report):
    folder, ident = full_report
    frame = pd.read_csv(folder / "verdicts.csv").drop(columns=["ts"])
    frame.to_csv(folder / "verdicts.csv", index=False)
    with pytest.raises(TrailError, match=r"verdicts.csv: no ts column"):
        load_trail(folder, ident)


def test_a_risk_check_value_that_is_not_a_number_is_named_as_damaged(full_report):
    folder, ident = full_report
    frame = pd.read_csv(folder / "risk_checks.csv", dtype=str)
    frame.loc[0, "value"] = "lots"
    frame.to_csv(folder / "risk_checks.csv", index=False)
    with pytest.raises(TrailError, match=r"risk_checks.csv: column value: not a number"):
        load_trail(folder, ident)


def test_explain_of_a_damaged_report_is_one_error_line(full_report):
    folder, ident = full_report
    (folder / "orders.csv").write_bytes(b"")
    out = runner.invoke(app, ["explain", ident, "--report", str(folder)], env=WIDE)
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: damaged report file")
    assert "orders.csv: empty" in lines[0] and "Traceback" not in out.output


# -- a report folder deleted while it is written -----------------------------------------------------


def _delete_after_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder being written disappears right after its tables (someone cleaned up reports/)."""
    write_tables = report_mod._write_tables

    def and_delete(result: RunResult, folder: Path) -> None:
        write_tables(result, folder)
        shutil.rmtree(folder)

    monkeypatch.setattr(report_mod, "_write_tables", and_delete)


def test_a_report_folder_deleted_mid_write_raises_a_report_error_naming_it(stocks, tmp_path, monkeypatch):
    _delete_after_tables(monkeypatch)
    out = tmp_path / "reports" / "gone"
    with pytest.raises(
        ReportError, match=r"cannot write the report folder .*gone: No such file or directory"
    ):
        write_report(stocks, out)
    assert not out.exists()


def test_the_cli_says_in_one_line_that_the_report_folder_vanished(sample_store, tmp_path, monkeypatch):
    monkeypatch.setenv("HFLITE_DATA__DIR", str(sample_store.root))
    monkeypatch.chdir(tmp_path)
    _delete_after_tables(monkeypatch)
    args = ["backtest", "--strategy", "trend", "--symbols", "SPY", "--start", START, "--end", END]
    args += ["--out", "reports/gone"]
    out = runner.invoke(app, args, env=WIDE)
    assert out.exit_code == 1
    errors = [line for line in out.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot write the report folder reports/gone" in errors[0]
    assert "No such file or directory" in errors[0] and "Traceback" not in out.output
    assert isinstance(out.exception, SystemExit)


# -- benchmarks cover the run's window on their own calendar -----------------------------------------


def _hand_buy_and_hold(store, symbol: str, cash: float) -> float:
    """cash x the last close dated <= END over the first close dated >= START."""
    bars = store.read_bars(symbol, "1d", pd.Timestamp(START, tz="UTC"), pd.Timestamp(END, tz="UTC"))
    day = pd.to_datetime(bars["ts"], utc=True).dt.normalize()
    window = bars[(day >= pd.Timestamp(START, tz="UTC")) & (day <= pd.Timestamp(END, tz="UTC"))]
    return cash * float(window["close"].iloc[-1]) / float(window["close"].iloc[0])


def test_the_btc_benchmark_ends_the_same_whether_or_not_the_run_trades_crypto(stocks, mixed, sample_store):
    name = "BTC-USD buy & hold"
    expected = _hand_buy_and_hold(sample_store, "BTC-USD", stocks.initial_cash)
    assert stocks.benchmarks[name].iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert mixed.benchmarks[name].iloc[-1] == pytest.approx(expected, rel=1e-12)
    assert benchmark_metrics(stocks)[name] == benchmark_metrics(mixed)[name]


def test_the_spy_benchmark_is_the_same_whatever_the_run_trades(stocks, mixed, sample_store):
    name = "SPY buy & hold"
    expected = _hand_buy_and_hold(sample_store, "SPY", stocks.initial_cash)
    assert mixed.benchmarks[name].iloc[-1] == pytest.approx(expected, rel=1e-12)
    pd.testing.assert_series_equal(stocks.benchmarks[name], mixed.benchmarks[name])


def test_each_benchmark_records_the_date_of_its_last_bar(stocks):
    assert stocks.benchmark_last == {
        "SPY buy & hold": pd.Timestamp(END, tz="UTC"),
        "BTC-USD buy & hold": pd.Timestamp(END, tz="UTC"),
    }


def test_the_terminal_summary_says_each_benchmarks_last_bar(stocks):
    table = summary_table(stocks, run_metrics(stocks), benchmark_metrics(stocks))
    console = Console(width=160, record=True)
    console.print(table)
    row = next(line for line in console.export_text().splitlines() if "Last bar" in line)
    assert row.count(END) == 2


def test_the_report_says_each_benchmarks_last_bar(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    assert f"SPY buy &amp; hold (last bar {END})" in html
    assert f"BTC-USD buy &amp; hold (last bar {END})" in html
    assert f"<tr><td>Last bar</td><td>—</td><td>{END}</td><td>{END}</td></tr>" in html


def test_the_information_ratio_compares_returns_over_the_benchmarks_own_days():
    days = pd.date_range("2024-01-01", periods=15, freq="D", tz="UTC")  # Monday to the next Monday
    weekdays = days[days.day_of_week < 5]
    bench = pd.Series(100.0 * 1.01 ** np.arange(len(weekdays)), index=weekdays)
    strategy = pd.Series(100.0 * 1.02 ** np.arange(len(days)), index=days)  # moves at weekends too
    ir = compute_metrics(strategy, None, benchmark=bench)["information_ratio"]
    on_bench_days = strategy.loc[weekdays].pct_change().dropna()
    active = on_bench_days - bench.pct_change().dropna()
    ppy = (len(weekdays) - 1) / (14 / 365.25)  # returns span the benchmark's days: Friday to Monday
    assert ir == pytest.approx(active.mean() / active.std(ddof=1) * np.sqrt(ppy))


# -- the report page ---------------------------------------------------------------------------------


def _figure(html: str, div_id: str) -> dict:
    """The plotly figure (data and layout) of the div ``div_id`` in a report page."""
    call = html.index("Plotly.newPlot(", html.index(f'id="{div_id}"'))
    decoder, rest = json.JSONDecoder(), html[call + len("Plotly.newPlot(") :]
    parts = []
    for _ in range(3):  # the div id, the data, the layout
        rest = rest.lstrip().removeprefix(",").lstrip()
        value, used = decoder.raw_decode(rest)
        parts.append(value)
        rest = rest[used:]
    assert parts[0] == div_id
    return {"data": parts[1], "layout": parts[2]}


def test_the_equity_scale_buttons_sit_top_left_away_from_the_plotly_toolbar(report):
    layout = _figure((report / "report.html").read_text(encoding="utf-8"), "fig-equity")["layout"]
    menu = layout["updatemenus"][0]
    assert (menu["x"], menu["xanchor"], menu["yanchor"]) == (0, "left", "bottom")
    assert [b["label"] for b in menu["buttons"]] == ["Linear", "Log"]


def test_the_equity_chart_is_log_scale_when_a_benchmark_ends_over_3x_from_the_strategy(stocks):
    boosted = {**stocks.benchmarks}
    name = "BTC-USD buy & hold"
    boosted[name] = boosted[name] * (3.2 * stocks.equity.iloc[-1] / boosted[name].iloc[-1])
    result = RunResult(**{**stocks.__dict__, "benchmarks": boosted})
    layout = _figure(render_html(result, run_metrics(result), {}), "fig-equity")["layout"]
    assert layout["yaxis"]["type"] == "log"
    assert "log scale" in layout["yaxis"]["title"]["text"]
    assert layout["updatemenus"][0]["active"] == 1


def test_the_equity_chart_stays_linear_when_every_curve_ends_within_3x(stocks):
    tamed = {n: c * (2.9 * stocks.equity.iloc[-1] / c.iloc[-1]) for n, c in stocks.benchmarks.items()}
    result = RunResult(**{**stocks.__dict__, "benchmarks": tamed})
    layout = _figure(render_html(result, run_metrics(result), {}), "fig-equity")["layout"]
    assert layout["yaxis"].get("type", "linear") == "linear"
    assert "log scale" not in layout["yaxis"]["title"]["text"]
    assert layout["updatemenus"][0]["active"] == 0


def test_the_equity_chart_draws_each_benchmark_to_its_own_last_bar(stocks):
    figure = _figure(render_html(stocks, run_metrics(stocks), {}), "fig-equity")
    btc = next(t for t in figure["data"] if t["name"] == "BTC-USD buy & hold")
    assert btc["x"][-1] == "2019-12-07"  # the 2019-12-06 bar closes at midnight, after the stocks


def _part(html: str, heading: str) -> str:
    """The part of the page from the ``<h3>`` ``heading`` to the next ``<h3>``."""
    start = html.index(f"<h3>{heading}</h3>")
    return html[start : html.index("<h3>", start + 1)]


def test_the_restriction_spans_and_breaker_details_wrap_instead_of_being_cut(stocks):
    why, detail = "weekly loss limit " * 8, "circuit breaker on SPY: " + "a long detail " * 10
    spans = pd.DataFrame(
        [["weekly_loss", stocks.equity.index[5], stocks.equity.index[9], 4.0, why]],
        columns=list(stocks.risk_spans.columns),
    )
    events = pd.DataFrame(
        [[stocks.equity.index[7], "breaker", "SPY", detail]], columns=list(stocks.risk_events.columns)
    )
    result = RunResult(**{**stocks.__dict__, "risk_spans": spans, "risk_events": events})
    html = render_html(result, run_metrics(result), {})
    assert f'<td class="wrap">{why}</td>' in _part(html, "Time under restrictions")
    assert f'<td class="wrap">{detail}</td>' in _part(html, "Circuit breakers")
    assert "td.wrap,th.wrap{white-space:normal" in html


def test_the_largest_cuts_fit_the_card_and_wrap_their_rules_between_rules(stocks):
    verdicts = stocks.verdicts.copy()
    verdicts.loc[verdicts["status"] == "resized", "rules"] = "correlation;position_cap;gross_cap"
    result = RunResult(**{**stocks.__dict__, "verdicts": verdicts})
    html = render_html(result, run_metrics(result), {})
    cuts = html[html.index("<h3>Largest cuts</h3>") :]
    assert cuts.index('<div class="scroll fit">') < cuts.index("</table>")
    assert '<td class="wrap">correlation; position_cap; gross_cap</td>' in cuts
    assert "overflow-wrap:break-word" in html and "overflow-wrap:anywhere" not in html


def test_the_trades_table_fits_the_card_at_1400_px(report):
    html = (report / "report.html").read_text(encoding="utf-8")
    start = html.index('<section id="trades">')
    trades = html[start : html.index("</section>", start)]
    header = trades[trades.index("<thead>") : trades.index("</thead>")]
    assert header.count("<th") <= 11
    assert '<div class="scroll fit">' in trades
    assert ".fit table{table-layout:auto;width:100%}" in html


def test_calibration_uses_quantile_bins_when_predictions_bunch_in_one_decile():
    rng = np.random.default_rng(3)
    prob = np.concatenate([rng.uniform(0.50, 0.56, 900), rng.uniform(0.2, 0.8, 100)])
    fwd = rng.normal(0.0, 0.01, len(prob))
    table = calibration_table(prob, fwd)
    assert len(table) == 10
    assert table["n"].tolist() == [100] * 10
    assert (table["bin_lo"].diff().dropna() > 0).all() and (table["bin_hi"] > table["bin_lo"]).all()
    assert int(((table["mean_prob"] >= 0.5) & (table["mean_prob"] < 0.56)).sum()) >= 7


def test_calibration_of_identical_predictions_is_one_bin():
    table = calibration_table(np.full(50, 0.55), np.linspace(-1, 1, 50))
    assert table[["bin_lo", "bin_hi", "n"]].values.tolist() == [[0.55, 0.55, 50]]
    assert table["up_rate"].iloc[0] == pytest.approx(0.5)
