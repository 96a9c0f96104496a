"""The report folder: every file, every section, one plotly.js, documented columns, atomic writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from plotly.offline import get_plotlyjs
from rich.console import Console

import hflite.analytics.report as report_mod
from hflite.analytics import (
    REPORT_FILES,
    SECTIONS,
    benchmark_metrics,
    buy_and_hold,
    run_metrics,
    summary_table,
    write_report,
)
from hflite.engine.result import FILL_COLUMNS, ORDER_COLUMNS, TRADE_COLUMNS, VERDICT_COLUMNS, RunResult


def _bars(index: pd.DatetimeIndex, rng: np.random.Generator, start_px: float) -> pd.DataFrame:
    close = start_px * np.exp(np.cumsum(rng.normal(0.0003, 0.015, len(index))))
    return pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": 1e6}, index=index
    )


def make_result(n_days: int = 300, symbols: tuple[str, ...] = ("AAA", "BTCUSD"), seed: int = 7) -> RunResult:
    """A small deterministic run: stock-like symbols close 21:00 UTC on weekdays, *USD ones daily 00:00."""
    rng = np.random.default_rng(seed)
    days = pd.date_range("2023-01-02", periods=n_days, freq="D", tz="UTC")
    prices: dict[str, pd.DataFrame] = {}
    for i, sym in enumerate(symbols):
        idx = days if sym.endswith("USD") else days[days.day_of_week < 5] + pd.Timedelta(hours=21)
        prices[sym] = _bars(idx, rng, 50.0 + 10 * i)
    timeline = pd.DatetimeIndex(sorted(set().union(*(p.index for p in prices.values()))))
    cash0 = 100_000.0
    equity = pd.Series(cash0 * np.exp(np.cumsum(rng.normal(0.0002, 0.006, len(timeline)))), index=timeline)
    gross = pd.Series(np.where(np.arange(len(timeline)) % 10 < 6, 0.5, 0.0), index=timeline) * equity
    positions = pd.DataFrame({s: gross / len(symbols) for s in symbols})
    fills, trades, orders, verdicts = [], [], [], []
    for k, sym in enumerate(symbols):
        px = prices[sym]["close"]
        for j in range(4):
            a, b = px.index[10 + 50 * j], px.index[35 + 50 * j]
            is_open = j == 3 and k == 0
            qty = 100.0
            entry, exit_ = float(px.loc[a]), float(px.loc[b])
            tid = f"{sym}-{j}"
            orders.append(
                [
                    f"o-{tid}-in",
                    sym,
                    "buy",
                    "market",
                    qty,
                    np.nan,
                    "gtc",
                    "filled",
                    qty,
                    entry,
                    a,
                    a,
                    "signal",
                    f"d-{tid}",
                    "",
                ]
            )
            fills.append([f"o-{tid}-in", sym, "buy", qty, entry, qty * entry, 1.0, 1.0, 0.01, a, False])
            verdicts.append(
                [
                    f"i-{tid}-in",
                    sym,
                    a,
                    "approved" if j % 2 else "resized",
                    150.0,
                    qty,
                    "ok" if j % 2 else "atr size cap",
                ]
            )
            if not is_open:
                orders.append(
                    [
                        f"o-{tid}-out",
                        sym,
                        "sell",
                        "market",
                        qty,
                        np.nan,
                        "gtc",
                        "filled",
                        qty,
                        exit_,
                        b,
                        b,
                        "exit",
                        f"d-{tid}x",
                        "",
                    ]
                )
                fills.append([f"o-{tid}-out", sym, "sell", qty, exit_, qty * exit_, 1.0, 1.0, 0.01, b, False])
            last = float(px.iloc[-1])
            out_px = last if is_open else exit_
            trades.append(
                [
                    tid,
                    sym,
                    1,
                    qty,
                    a,
                    entry,
                    pd.NaT if is_open else b,
                    np.nan if is_open else exit_,
                    (out_px - entry) * qty,
                    (out_px - entry) * qty,
                    1.0 if is_open else 2.0,
                    (out_px / entry - 1) * 100,
                    30,
                    "signal",
                    "" if is_open else "exit",
                    is_open,
                    1.0 if is_open else 0.0,
                ]
            )
    verdicts.append(["i-rej", symbols[0], timeline[5], "rejected", 10.0, 0.0, "daily loss limit"])
    bench_close = prices[symbols[0]]["close"]
    return RunResult(
        run_id="run-test-0001",
        strategy="trend",
        symbols=list(symbols),
        start=timeline[0],
        end=timeline[-1],
        initial_cash=cash0,
        equity=equity,
        cash=equity - gross,
        gross_exposure=gross,
        net_exposure=gross,
        positions=positions,
        trades=pd.DataFrame(trades, columns=TRADE_COLUMNS),
        orders=pd.DataFrame(orders, columns=ORDER_COLUMNS),
        fills=pd.DataFrame(fills, columns=FILL_COLUMNS),
        verdicts=pd.DataFrame(verdicts, columns=VERDICT_COLUMNS),
        prices=prices,
        benchmarks={"SPY": buy_and_hold(bench_close, cash0, timeline)},
        risk_free=pd.Series(4.0, index=timeline),
        config={"strategy": {"name": "trend", "fast": 20}},
        data_versions={"stocks/AAA/1d": "sha256:abc123"},
        warnings=["gap in AAA: 2023-03-01 → 2023-03-03"],
        stats={"bars": float(len(timeline)), "seconds": 0.5},
    )


@pytest.fixture(scope="module")
def result() -> RunResult:
    return make_result()


@pytest.fixture(scope="module")
def folder(result: RunResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reports") / "run-test-0001"
    html = write_report(result, out)
    assert html == out / "report.html"
    return out


def test_report_folder_has_every_file(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORT_FILES)


def test_report_leaves_no_temporary_sibling(folder: Path) -> None:
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_html_has_every_section_title(folder: Path) -> None:
    html = (folder / "report.html").read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in html
    for text in (
        "run-test-0001",
        "sha256:abc123",
        "gap in AAA",
        "Data versions",
        "Largest resizes",
        "atr size cap",
        "Trading statistics",
        "fig-price-0",
        "fig-price-1",
        "fig-monthly",
    ):
        assert text in html


def test_html_embeds_plotlyjs_exactly_once_and_links_nothing(folder: Path) -> None:
    html = (folder / "report.html").read_text(encoding="utf-8")
    plotlyjs = get_plotlyjs()
    assert html.count(plotlyjs[:300]) == 1
    page = html.replace(plotlyjs, "")  # the library mentions URLs itself; the page around it must not
    assert "<script src" not in page
    assert "<link" not in page
    assert "http" not in page


@pytest.mark.parametrize(
    ("name", "columns"),
    [
        ("trades.csv", TRADE_COLUMNS),
        ("orders.csv", ORDER_COLUMNS),
        ("fills.csv", FILL_COLUMNS),
        ("verdicts.csv", VERDICT_COLUMNS),
    ],
)
def test_csv_has_documented_columns(folder: Path, name: str, columns: list[str]) -> None:
    frame = pd.read_csv(folder / name)
    assert list(frame.columns) == columns
    assert len(frame) > 0


def test_equity_parquet_has_curves_and_benchmarks(folder: Path, result: RunResult) -> None:
    frame = pd.read_parquet(folder / "equity.parquet")
    assert list(frame.columns) == ["equity", "cash", "gross_exposure", "net_exposure", "benchmark_SPY"]
    assert len(frame) == len(result.equity)
    assert frame["equity"].iloc[-1] == pytest.approx(result.equity.iloc[-1])


def test_metrics_json_matches_run_metrics(folder: Path, result: RunResult) -> None:
    payload = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    expected = run_metrics(result)
    assert payload["metrics"]["total_return"] == pytest.approx(expected["total_return"])
    assert payload["metrics"]["trades"] == 7
    assert payload["metrics"]["open_trades"] == 1
    assert set(payload["benchmarks"]) == {"SPY"}
    assert payload["benchmarks"]["SPY"]["hit_rate"] is None  # NaN -> null
    assert json.loads((folder / "config.json").read_text(encoding="utf-8")) == result.config


def test_failure_mid_write_leaves_no_out_dir(
    result: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "render_html", boom)
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="disk full"):
        write_report(result, out)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_previous_report_intact(
    result: RunResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "report.html").write_text("old", encoding="utf-8")
    monkeypatch.setattr(report_mod, "_write_tables", lambda *_a: (_ for _ in ()).throw(OSError("io")))
    with pytest.raises(OSError, match="io"):
        write_report(result, out)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert (out / "report.html").read_text(encoding="utf-8") == "old"


def test_success_replaces_previous_report(result: RunResult, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    write_report(result, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_summary_table_has_strategy_and_benchmark_columns(result: RunResult) -> None:
    metrics = run_metrics(result)
    table = summary_table(result, metrics, benchmark_metrics(result))
    assert [c.header for c in table.columns] == ["Metric", "Strategy", "SPY"]
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert f"{metrics['total_return'] * 100:.2f}%" in text
    assert f"{metrics['sharpe']:.2f}" in text
    assert "1 open position(s)" in text
    assert not math.isnan(metrics["sharpe"])
