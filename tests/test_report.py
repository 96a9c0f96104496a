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
from hflite.engine.result import (
    CHECK_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    RISK_EVENT_COLUMNS,
    RISK_LIMIT_COLUMNS,
    RISK_SPAN_COLUMNS,
    TRADE_COLUMNS,
    VERDICT_COLUMNS,
    RunResult,
)
from hflite.engine.run import backtest
from tests.conftest import make_settings


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
                    150.0 if j % 2 == 0 else qty,
                    qty,
                    "ok" if j % 2 else "atr size cap",
                    "entry",
                    "buy",
                    "signal",
                    entry,
                    1.5,
                    1.0,
                    "" if j % 2 else "position_cap",
                    f"o-{tid}-in",
                    '{"fast": 1.0}',
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
    verdicts.append(
        ["i-rej", symbols[0], timeline[5], "rejected", 0.0, 0.0, "daily loss limit", "entry", "buy",
         "signal", 50.0, 1.0, 1.0, "daily_loss", None, "{}"]
    )  # fmt: skip
    checks = [
        ["i-rej", symbols[0], timeline[5], "drawdown_pct", 1.0, 15.0, True],
        ["i-AAA-0-in", "AAA", timeline[10], "position_pct", 30.0, 25.0, False],
    ]
    events = [
        [timeline[5], "daily_loss", "", "daily loss limit: 2.10% below the period's starting equity"],
        [timeline[40], "breaker", symbols[0], "circuit breaker on AAA: a 6.0-sigma move"],
        [timeline[60], "halt", "", "drawdown 15.20% reached the 15% limit"],
    ]
    spans = [
        ["daily_loss", timeline[5], timeline[6], (timeline[6] - timeline[5]) / pd.Timedelta(days=1), "lock"],
        ["halted", timeline[60], None, (timeline[-1] - timeline[60]) / pd.Timedelta(days=1), "drawdown"],
    ]
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
        risk_checks=pd.DataFrame(checks, columns=CHECK_COLUMNS),
        risk_events=pd.DataFrame(events, columns=RISK_EVENT_COLUMNS),
        risk_spans=pd.DataFrame(spans, columns=RISK_SPAN_COLUMNS),
        risk_limits=pd.DataFrame(
            [("max_position_pct", "25"), ("daily_loss_pct", "2")], columns=RISK_LIMIT_COLUMNS
        ),
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
        if title in ("AI", "LLM"):  # only for the ai_ensemble strategy / runs with [llm] on
            assert f"<h2>{title}</h2>" not in html
            continue
        assert f"<h2>{title}</h2>" in html
    for text in (
        "run-test-0001",
        "sha256:abc123",
        "gap in AAA",
        "Data versions",
        "Largest cuts",
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
        ("risk_checks.csv", CHECK_COLUMNS),
        ("risk_events.csv", RISK_EVENT_COLUMNS),
        ("risk_spans.csv", RISK_SPAN_COLUMNS),
        ("risk_limits.csv", RISK_LIMIT_COLUMNS),
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


# -- the audit trail of a real run ----------------------------------------------------------------
# Four symbols on the sample data with a tight drawdown rule, a human pause from 2018-03-01 to
# 2018-10-01 and a kill on 2019-11-01 that is never lifted: the gate resizes (drawdown, volatility,
# correlation, position cap, regime) and rejects (pause, circuit breaker). BTC-USD trades every day at
# 00:00 UTC, so the run's timeline has a point at each of those midnights.
PAUSE, RESUME, KILL = "2018-03-01", "2018-10-01", "2019-11-01"


@pytest.fixture(scope="module")
def audit(sample_store, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunResult, Path]:
    settings = make_settings(
        sample_store,
        run={"symbols": ["SPY", "QQQ", "GLD", "BTC-USD"], "start": "2017-01-03", "end": "2019-12-31"},
        strategy={"name": "trend", "fast": 10, "slow": 40},
        risk={
            "max_drawdown_pct": 6,
            "drawdown_reduce_pct": 3,
            "events": [
                {"at": PAUSE, "action": "pause", "reason": "holiday"},
                {"at": RESUME, "action": "resume", "reason": "back"},
                {"at": KILL, "action": "kill", "reason": "done for the year"},
            ],
        },
    )
    result = backtest(settings, sample_store, run_id="audit-run")
    out = tmp_path_factory.mktemp("audit") / "audit-run"
    write_report(result, out)
    return result, out


def _risk_section(folder: Path) -> str:
    html = (folder / "report.html").read_text(encoding="utf-8")
    start = html.index('<section id="risk">')
    return html[start : html.index("</section>", start)]


def test_the_real_run_resizes_and_rejects(audit):
    result, _ = audit
    status = result.verdicts["status"].value_counts()
    assert status["resized"] > 0 and status["rejected"] > 0 and status["approved"] > 0


def test_every_check_of_every_verdict_is_a_row_with_its_value_and_limit(audit):
    result, folder = audit
    checks = pd.read_csv(folder / "risk_checks.csv")
    assert len(checks) == len(result.risk_checks) > 0
    assert set(checks["intent_id"]) <= set(result.verdicts["intent_id"])
    exits = result.verdicts.loc[result.verdicts["kind"] == "exit", "intent_id"]
    assert not checks["intent_id"].isin(exits).any()  # exits pass no checks
    assert (checks.loc[checks["name"] == "drawdown_pct", "limit"] == 6.0).all()
    assert (checks.loc[checks["name"] == "position_pct", "limit"] == 25.0).all()


def test_a_position_cap_cut_records_the_uncut_share_of_equity_and_keeps_exactly_the_cap(audit):
    result, folder = audit
    verdicts = pd.read_csv(folder / "verdicts.csv", keep_default_na=False)
    checks = pd.read_csv(folder / "risk_checks.csv").set_index(["intent_id", "name"])
    capped = verdicts[verdicts["rules"] == "position_cap"]
    assert len(capped) > 0
    for v in capped.itertuples(index=False):
        equity = result.equity.loc[pd.Timestamp(v.ts)]  # the mark the gate saw at that bar-time
        c = checks.loc[(v.intent_id, "position_pct")]
        assert c["value"] == pytest.approx(v.qty_requested * v.price * v.fx / equity * 100, rel=1e-9)
        assert c["value"] > c["limit"] == 25.0 and not c["passed"]
        assert v.qty_approved == math.floor(0.25 * equity / (v.price * v.fx))  # whole shares/units left


def test_a_paused_entry_is_rejected_with_the_human_reason(audit):
    result, _ = audit
    v = result.verdicts
    in_pause = (v["ts"] >= pd.Timestamp(PAUSE, tz="UTC")) & (v["ts"] < pd.Timestamp(RESUME, tz="UTC"))
    entries = v[in_pause & (v["kind"] == "entry")]
    assert len(entries) > 0
    assert (entries["status"] == "rejected").all() and (entries["rules"] == "pause").all()
    assert entries["reason"].str.startswith("paused by a human: holiday").all()


def test_a_breaker_rejection_names_a_trip_listed_in_the_risk_events(audit):
    result, _ = audit
    trips = result.risk_events[result.risk_events["kind"] == "breaker"]
    rejected = result.verdicts[result.verdicts["rules"] == "circuit_breaker"]
    assert len(rejected) > 0
    for v in rejected.itertuples(index=False):
        assert v.reason in set(trips.loc[trips["symbol"] == v.symbol, "detail"])


def test_verdicts_csv_carries_the_intent_its_order_and_its_indicator_values(audit):
    result, folder = audit
    verdicts = pd.read_csv(folder / "verdicts.csv", keep_default_na=False)
    assert list(verdicts.columns) == VERDICT_COLUMNS
    orders = pd.read_csv(folder / "orders.csv", keep_default_na=False).set_index("order_id")
    for v in verdicts[verdicts["order_id"] != ""].itertuples(index=False):
        assert orders.loc[v.order_id, "decision_id"] == v.intent_id
        assert orders.loc[v.order_id, "qty"] == pytest.approx(v.qty_approved)
    entry = verdicts[(verdicts["kind"] == "entry") & verdicts["intent_reason"].str.contains("crossed")].iloc[
        0
    ]
    values = json.loads(entry["values"])
    # the strategy's reason prints the same indicator values: "SMA(10) 117.1240 crossed above SMA(40) ..."
    assert (
        f"{values['fast']:.4f}" in entry["intent_reason"]
        and f"{values['slow']:.4f}" in entry["intent_reason"]
    )
    assert values["atr"] == pytest.approx(entry["atr"])


def test_rejections_and_cuts_are_counted_per_rule_in_the_risk_section(audit):
    result, folder = audit
    section = _risk_section(folder)
    rules = result.verdicts["rules"].str.split(";")
    for rule in ("pause", "circuit_breaker", "volatility", "drawdown_reduce", "position_cap"):
        has = rules.apply(lambda names, r=rule: r in names)
        rejected = int((has & (result.verdicts["status"] == "rejected")).sum())
        resized = int((has & (result.verdicts["status"] == "resized")).sum())
        assert rejected + resized > 0, rule
        row = f"<tr><td>{rule}</td><td>{rejected}</td><td>{resized}</td><td>{rejected + resized}</td></tr>"
        assert row in section


def test_time_paused_and_killed_runs_between_the_timeline_points_of_the_commands(audit):
    result, folder = audit
    idx = result.equity.index
    pause, resume, kill = (idx[idx >= pd.Timestamp(d, tz="UTC")][0] for d in (PAUSE, RESUME, KILL))
    assert (pause, resume, kill) == tuple(pd.Timestamp(d, tz="UTC") for d in (PAUSE, RESUME, KILL))
    spans = pd.read_csv(folder / "risk_spans.csv", parse_dates=["start_ts", "end_ts"])
    paused = spans[spans["kind"] == "paused"].iloc[0]
    assert (paused["start_ts"], paused["end_ts"], paused["days"]) == (pause, resume, 214.0)
    killed = spans[spans["kind"] == "killed"].iloc[0]
    assert pd.isna(killed["end_ts"])  # never lifted: in force at the end
    assert killed["days"] == (idx[-1] - kill) / pd.Timedelta(days=1) == 61.0
    run_days = (idx[-1] - idx[0]) / pd.Timedelta(days=1)
    section = _risk_section(folder)
    assert (
        f"<tr><td>Paused (human)</td><td>1</td><td>214.0</td><td>{214 / run_days:.2%}</td><td></td></tr>"
        in section
    )
    assert (
        f"<tr><td>Killed (human)</td><td>1</td><td>61.0</td><td>{61 / run_days:.2%}</td><td>yes</td></tr>"
        in section
    )
    assert "still in force" in section and "fig-risk-spans" in section


def test_the_largest_cuts_rank_by_usd_and_show_the_rules(audit):
    result, folder = audit
    v = result.verdicts
    cut = (v["qty_requested"] - v["qty_approved"]) * v["price"] * v["fx"]
    sized = v[(v["qty_requested"] > 0) & (v["status"] != "approved")]
    top = cut.loc[sized.index].idxmax()
    ranked = report_mod.largest_cuts(v)
    assert ranked.index[0] == top and ranked["cut_usd"].iloc[0] == pytest.approx(cut[top])
    section = _risk_section(folder)
    part = section[section.index("Largest cuts") :]
    assert f"<td>{v.loc[top, 'intent_id']}</td>" in part and f"{cut[top]:,.0f}" in part


def test_the_risk_section_lists_every_limit_and_the_breaker_trips(audit):
    result, folder = audit
    section = _risk_section(folder)
    limits = pd.read_csv(folder / "risk_limits.csv", keep_default_na=False)
    assert ("max_drawdown_pct", "6") in set(zip(limits["limit"], limits["value"].astype(str), strict=True))
    assert "<tr><td>max_drawdown_pct</td><td>6</td></tr>" in section
    trips = result.risk_events[result.risk_events["kind"] == "breaker"]["symbol"].value_counts()
    for sym, n in trips.items():
        assert f"<tr><td>{sym}</td><td>{n}</td><td>0</td></tr>" in section
