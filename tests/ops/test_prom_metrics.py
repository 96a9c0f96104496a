"""Prometheus metrics (hflite.ops.metrics), the Grafana dashboard and the Prometheus alert rules.

Unit tests parse ``Metrics.render()`` the way Prometheus would; the dashboard and rule tests make
sure every name they query is one the runtime exports; promtool validates the rules and config and
runs rule unit tests; the slow tests start a real Prometheus scraping a bearer-protected endpoint.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from hflite.ops.events import OpsBus, OpsEvent
from hflite.ops.metrics import OTHER, Metrics
from tests.ops.prometheus import need_binary, start_prometheus

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "hflite.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"

Series = dict[tuple[tuple[str, str], ...], float]


# -- helpers ---------------------------------------------------------------------------------------


def scrape(m: Metrics) -> dict[str, Series]:
    """Every sample in the exposition text: series name -> {sorted label items: value} (no _created)."""
    text, _ = m.render()
    out: dict[str, Series] = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def series(m: Metrics, name: str) -> dict[tuple[str, ...], float]:
    """One series name's samples keyed by label values in label-name order (le excluded)."""
    return {
        tuple(v for k, v in labels if k != "le"): value for labels, value in scrape(m).get(name, {}).items()
    }


def value(m: Metrics, name: str, **labels: str) -> float:
    return scrape(m)[name][tuple(sorted(labels.items()))]


def ev(kind: str, **fields: Any) -> OpsEvent:
    return OpsEvent(kind, fields=fields)


BOOK: dict[str, Any] = {
    "run_id": "paper-20240102",
    "bar_ts": "2024-01-02T15:00:00+00:00",
    "equity": 101_234.5,
    "cash": {"USD": 60_000.0, "EUR": 1_500.0},
    "positions": {
        "AAA": {"qty": 100.0, "avg_price": 10.0, "last": 12.5},
        "BBB": {"qty": -20.0, "avg_price": 50.0, "last": math.nan},
        "CCC": {"qty": 0.0, "avg_price": 5.0, "last": 5.0},
    },
    "open_orders": 3,
    "orders_by_state": {"accepted": 2, "partially_filled": 1, "filled": 40},
    "risk": "running",
    "last_bar": {"AAA": "2024-01-02T15:00:00+00:00", "BBB": "2024-01-02T14:00:00+00:00"},
    "halted": "",
}
RISK: dict[str, Any] = {
    "limits": [
        {"name": "drawdown", "value": 0.031, "limit": 0.15, "utilisation": 0.21},
        {"name": "gross_exposure", "value": 0.42, "limit": 1.0, "utilisation": 0.42},
    ],
    "pnl": {"day": 12.5, "week": -3.0, "month": 40.0, "total": 210.0},
    "drawdown": 0.031,
    "gross_exposure": 0.42,
    "net_exposure": 0.40,
    "halted": False,
    "mode": "running",
}
T_AAA = 1704207600.0  # 2024-01-02T15:00:00Z
T_BBB = T_AAA - 3600


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- the listener ----------------------------------------------------------------------------------


def test_events_map_to_exactly_the_expected_samples() -> None:
    m = Metrics("r1")
    for e in [
        ev("fill", symbol="AAA", side="buy", qty=10, price=1.0, slippage_bps=1.5),
        ev("fill", symbol="AAA", side="buy", qty=5, price=1.0, slippage_bps=-3.0),
        ev("fill", symbol="BBB", side="sell", qty=5, price=1.0, slippage_bps=12.0),
        ev("order", order_id="o1", symbol="AAA", status="accepted"),
        ev("order", order_id="o1", symbol="AAA", status="filled"),
        ev("order", order_id="o2", symbol="AAA", status="filled"),
        ev("risk.verdict", symbol="AAA", status="approved", rule=""),
        ev("risk.verdict", symbol="AAA", status="rejected", rule="max_positions"),
        ev("risk.verdict", symbol="BBB", status="resized", rule="gross_exposure"),
        ev("risk.halt", reason="drawdown 15.20% reached the 15% limit; new entries halted"),
        ev("risk.halt", reason="reconcile: 1 unexplained difference"),
        ev("risk.breaker", symbol="", detail="market down 7%"),
        ev("risk.limit", rule="daily_loss", detail="2.1% below"),
        ev("risk.command", action="pause", reason="lunch", source="telegram"),
        ev("risk.command", action="resume", reason="", source="api"),
        ev("stop_out", symbol="AAA", qty=10, price=0.9, order_id="o3"),
        ev("reconcile.diff", key="AAA", explained=False, resolution="halt"),
        ev("reconcile.diff", key="BBB", explained=True, resolution="fill"),
        ev("venue.request", venue="alpaca", op="submit", latency_s=0.12, error=""),
        ev("venue.request", venue="alpaca", op="submit", latency_s=0.30, error="timeout"),
        ev("venue.request", venue="alpaca", op="cancel", latency_s=0.05, error=""),
        ev("venue.disconnect", venue="alpaca", why="socket closed"),
        ev("venue.disconnect", venue="oanda", why="socket closed"),
        ev("venue.reconnect", venue="alpaca"),
        ev("feed.stale", symbol="BBB", last_bar="2024-01-02T14:00:00+00:00", late_s=3600.0),
        ev("llm.call", backend="ollama", latency_s=0.8, ok=True),
        ev("llm.call", backend="ollama", latency_s=30.0, ok=False),
        ev("llm.fallback", backend="ollama", why="timeout"),
        ev("bar", bar_to_order_s=0.004),
        ev("bar", bar_to_order_s=None),
        ev("bar", bar_to_order_s=0.2),
    ]:
        m(e)

    assert series(m, "hflite_fills_total") == {("buy", "AAA"): 2, ("sell", "BBB"): 1}
    assert series(m, "hflite_slippage_bps_count") == {("AAA",): 2, ("BBB",): 1}
    assert "hflite_slippage_bps_sum" not in scrape(m)  # negative buckets: no _sum in the exposition
    assert "hflite_slippage_bps_sum" not in m.names()
    assert value(m, "hflite_slippage_bps_bucket", symbol="AAA", le="-2.0") == 1  # the -3 bps fill
    assert value(m, "hflite_slippage_bps_bucket", symbol="AAA", le="2.0") == 2
    assert series(m, "hflite_order_updates_total") == {("accepted",): 1, ("filled",): 2}
    assert series(m, "hflite_risk_checks_total") == {
        ("approved", "none"): 1,
        ("rejected", "max_positions"): 1,
        ("resized", "gross_exposure"): 1,
    }
    assert series(m, "hflite_halts_total") == {("drawdown",): 1, ("reconcile",): 1}
    assert series(m, "hflite_breaker_trips_total") == {(): 1}
    assert series(m, "hflite_risk_limit_events_total") == {("daily_loss",): 1}
    assert series(m, "hflite_commands_total") == {("pause", "telegram"): 1, ("resume", "api"): 1}
    assert series(m, "hflite_stop_outs_total") == {("AAA",): 1}
    assert series(m, "hflite_reconcile_differences_total") == {("false",): 1, ("true",): 1}
    assert series(m, "hflite_venue_request_seconds_count") == {
        ("submit", "alpaca"): 2,
        ("cancel", "alpaca"): 1,
    }
    assert value(m, "hflite_venue_request_seconds_sum", venue="alpaca", op="submit") == pytest.approx(0.42)
    assert series(m, "hflite_venue_errors_total") == {("timeout", "alpaca"): 1}
    assert series(m, "hflite_venue_connected") == {("alpaca",): 1, ("oanda",): 0}
    assert series(m, "hflite_venue_disconnects_total") == {("alpaca",): 1, ("oanda",): 1}
    assert series(m, "hflite_feed_stale_total") == {("BBB",): 1}
    assert series(m, "hflite_llm_calls_total") == {("ollama", "true"): 1, ("ollama", "false"): 1}
    assert value(m, "hflite_llm_latency_seconds_sum", backend="ollama") == pytest.approx(30.8)
    assert series(m, "hflite_llm_fallbacks_total") == {("ollama",): 1}
    assert value(m, "hflite_bars_total") == 3
    assert value(m, "hflite_bar_to_order_seconds_count") == 2  # the bar that sent nothing is not observed
    assert value(m, "hflite_bar_to_order_seconds_sum") == pytest.approx(0.204)
    assert value(m, "hflite_bar_to_order_seconds_bucket", le="0.005") == 1
    assert value(m, "hflite_bar_to_order_seconds_bucket", le="0.25") == 2
    assert series(m, "hflite_run_info") == {("r1",): 1}


def test_the_ops_bus_feeds_it_as_a_listener() -> None:
    bus = OpsBus("r2")
    m = Metrics("r2")
    bus.subscribe(m)
    bus.emit("fill", "filled AAA", fields={"symbol": "AAA", "side": "sell", "slippage_bps": 0.5})
    bus.emit("bar", fields={"bar_to_order_s": 0.01})
    assert series(m, "hflite_fills_total") == {("sell", "AAA"): 1}
    assert value(m, "hflite_bars_total") == 1


def test_a_run_start_marks_its_venue_connected_before_any_drop() -> None:
    m = Metrics()
    m(ev("run.start", venue="paper", feed="recorded", symbols=["AAA"], journal="j.sqlite"))
    assert series(m, "hflite_venue_connected") == {("paper",): 1}


def test_kinds_it_does_not_map_change_nothing() -> None:
    m = Metrics("r3")
    before = scrape(m)
    m(ev("daily.summary", pnl=1.0, pnl_pct=0.1, equity=2.0, positions=1, risk_use={}, anomalies=[]))
    m(ev("alert.test"))
    m(ev("run.stop", steps=10, fills=1, why="once"))
    m(SimpleNamespace(kind="some.future.kind", fields={"symbol": "AAA"}))  # type: ignore[arg-type]
    assert scrape(m) == before


def test_malformed_fields_are_ignored_never_raised() -> None:
    m = Metrics()
    m(ev("fill", symbol="AAA", side="buy", slippage_bps=math.nan))
    m(ev("fill", symbol="AAA", side="buy", slippage_bps="n/a"))
    m(ev("fill"))
    m(ev("venue.request", venue="alpaca", op="submit", latency_s=None, error=""))
    m(ev("llm.call", backend="ollama", latency_s=math.inf, ok=True))
    m(ev("bar", bar_to_order_s=-math.inf))
    m(ev("risk.verdict", symbol="AAA", status="approved", rule={"unhashable": "dict"}))
    assert series(m, "hflite_fills_total") == {("buy", "AAA"): 2, ("none", "none"): 1}
    assert series(m, "hflite_slippage_bps_count") == {("AAA",): 0, ("none",): 0}
    assert series(m, "hflite_venue_request_seconds_count") == {("submit", "alpaca"): 0}
    assert value(m, "hflite_bar_to_order_seconds_count") == 0
    assert series(m, "hflite_risk_checks_total") == {("approved", OTHER): 1}


def test_free_text_and_unbounded_label_values_collapse_to_other() -> None:
    m = Metrics()
    m(ev("fill", symbol="buy AAA because the moon is full", side="BUY", slippage_bps=1.0))
    m(ev("risk.limit", rule="daily loss 2.1% below the period's start", detail=""))
    m(ev("risk.halt", reason="something nobody planned for"))
    m(ev("venue.request", venue="alpaca", op="submit", latency_s=0.1, error="HTTP 500: <html>oops</html>"))
    for i in range(2000):  # a bug upstream inventing symbols cannot explode the series count
        m(ev("feed.stale", symbol=f"SYM{i}", last_bar="", late_s=1.0))
        m(ev("risk.verdict", symbol="AAA", status="rejected", rule=f"rule_{i}"))
    assert series(m, "hflite_fills_total") == {("buy", OTHER): 1}
    assert series(m, "hflite_risk_limit_events_total") == {(OTHER,): 1}
    assert series(m, "hflite_halts_total") == {(OTHER,): 1}
    assert series(m, "hflite_venue_errors_total") == {(OTHER, "alpaca"): 1}
    stale = series(m, "hflite_feed_stale_total")
    assert len(stale) <= 513 and stale[(OTHER,)] == 2000 - 512
    checks = series(m, "hflite_risk_checks_total")
    assert len(checks) <= 65 and sum(checks.values()) == 2000


def test_each_instance_has_its_own_registry() -> None:
    a, b = Metrics("a"), Metrics("b")
    a(ev("bar", bar_to_order_s=None))
    assert value(a, "hflite_bars_total") == 1
    assert value(b, "hflite_bars_total") == 0
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "hflite_" not in global_text


def test_render_gives_exposition_text_and_its_content_type() -> None:
    m = Metrics()
    body, content_type = m.render()
    assert content_type == prometheus_client.CONTENT_TYPE_LATEST
    assert content_type.startswith("text/plain; version=")
    assert b"# TYPE hflite_equity gauge" in body


def test_the_listener_is_cheap_per_event() -> None:
    """Measures the cost (the lead's bench asserts the budget); here only that counting stays right."""
    m = Metrics()
    events = [
        ev("bar", bar_to_order_s=0.002),
        ev("risk.verdict", symbol="AAA", status="approved", rule=""),
        ev("order", order_id="o", symbol="AAA", status="accepted"),
        ev("fill", symbol="AAA", side="buy", slippage_bps=0.7),
    ]
    n = 5000
    start = time.perf_counter()
    for _ in range(n):
        for e in events:
            m(e)
    per_event_us = (time.perf_counter() - start) / (n * len(events)) * 1e6
    assert per_event_us > 0
    assert value(m, "hflite_bars_total") == n
    assert series(m, "hflite_fills_total") == {("buy", "AAA"): n}


# -- gauges from the book --------------------------------------------------------------------------


def test_a_book_and_risk_dict_set_every_gauge() -> None:
    clock = Clock(T_AAA + 30)
    m = Metrics(stale_after_s=600, clock=clock)
    m.set_runtime_up(True)
    m.on_book(BOOK, RISK)

    assert value(m, "hflite_equity") == 101_234.5
    assert series(m, "hflite_cash") == {("USD",): 60_000.0, ("EUR",): 1_500.0}
    assert series(m, "hflite_pnl") == {("day",): 12.5, ("week",): -3.0, ("month",): 40.0, ("total",): 210.0}
    assert value(m, "hflite_drawdown_ratio") == 0.031
    assert value(m, "hflite_gross_exposure_ratio") == 0.42
    assert value(m, "hflite_net_exposure_ratio") == 0.40
    assert value(m, "hflite_positions") == 2  # CCC's qty is 0: not a position
    # BBB has no last price yet: valued at its average price
    assert series(m, "hflite_position_value") == {("AAA",): 1250.0, ("BBB",): -1000.0}
    assert value(m, "hflite_open_orders") == 3
    by_state = series(m, "hflite_orders_by_state")
    assert (
        by_state[("accepted",)] == 2 and by_state[("partially_filled",)] == 1 and by_state[("filled",)] == 40
    )
    assert by_state[("rejected",)] == 0
    assert series(m, "hflite_risk_mode") == {("running",): 1, ("paused",): 0, ("killed",): 0}
    assert value(m, "hflite_halted") == 0
    assert series(m, "hflite_last_bar_timestamp_seconds") == {("AAA",): T_AAA, ("BBB",): T_BBB}
    assert series(m, "hflite_data_staleness_seconds") == {("AAA",): 30.0, ("BBB",): 3630.0}
    assert value(m, "hflite_data_stale_after_seconds") == 600
    assert value(m, "hflite_runtime_up") == 1
    assert series(m, "hflite_limit_utilisation_ratio") == {("drawdown",): 0.21, ("gross_exposure",): 0.42}
    assert series(m, "hflite_run_info") == {("paper-20240102",): 1}


def test_staleness_is_computed_at_scrape_time() -> None:
    clock = Clock(T_AAA + 10)
    m = Metrics(clock=clock)
    m.on_book(BOOK, RISK)
    assert series(m, "hflite_data_staleness_seconds")[("AAA",)] == 10
    clock.t += 120  # no new book: the runtime went quiet, staleness keeps growing
    assert series(m, "hflite_data_staleness_seconds")[("AAA",)] == 130


def test_a_replay_measures_staleness_on_the_sessions_clock() -> None:
    clock = Clock(2_000_000_000.0)  # the wall clock is years after the replayed bars
    m = Metrics(clock=clock)
    m.on_book(BOOK, RISK, now=T_AAA + 5)
    assert series(m, "hflite_data_staleness_seconds") == {("AAA",): 5.0, ("BBB",): 3605.0}
    clock.t += 20
    assert series(m, "hflite_data_staleness_seconds")[("AAA",)] == 25.0


def test_symbols_no_longer_held_lose_their_series() -> None:
    m = Metrics(clock=Clock(T_AAA))
    m.on_book(BOOK, RISK)
    later = {
        **BOOK,
        "cash": {"USD": 61_000.0},
        "positions": {"AAA": {"qty": 100.0, "avg_price": 10.0, "last": 13.0}},
        "last_bar": {"AAA": "2024-01-02T16:00:00+00:00"},
        "orders_by_state": {"filled": 41},
    }
    m.on_book(later, {**RISK, "limits": [RISK["limits"][0]]})
    assert series(m, "hflite_position_value") == {("AAA",): 1300.0}
    assert value(m, "hflite_positions") == 1
    assert series(m, "hflite_cash") == {("USD",): 61_000.0}
    assert series(m, "hflite_last_bar_timestamp_seconds") == {("AAA",): T_AAA + 3600}
    assert set(series(m, "hflite_data_staleness_seconds")) == {("AAA",)}
    assert series(m, "hflite_limit_utilisation_ratio") == {("drawdown",): 0.21}
    by_state = series(m, "hflite_orders_by_state")
    assert by_state[("filled",)] == 41 and by_state[("accepted",)] == 0  # gone from the book: now 0


def test_halts_pauses_and_a_runtime_down_show_in_the_gauges() -> None:
    m = Metrics()
    m.on_book({**BOOK, "halted": "reconcile: 1 unexplained difference"}, {**RISK, "mode": "paused"})
    assert value(m, "hflite_halted") == 1
    assert series(m, "hflite_risk_mode") == {("running",): 0, ("paused",): 1, ("killed",): 0}
    m.on_book(BOOK, {**RISK, "halted": True, "mode": "killed"})
    assert value(m, "hflite_halted") == 1
    assert series(m, "hflite_risk_mode") == {("running",): 0, ("paused",): 0, ("killed",): 1}
    m.on_book({**BOOK, "risk": "running"}, None)  # no risk dict: the book's own mode and halt
    assert value(m, "hflite_halted") == 0
    assert series(m, "hflite_risk_mode")[("running",)] == 1
    m.set_runtime_up(False)
    assert value(m, "hflite_runtime_up") == 0


def test_a_new_run_id_replaces_the_old_run_info_series() -> None:
    m = Metrics("first")
    m.on_book({**BOOK, "run_id": "second"})
    assert series(m, "hflite_run_info") == {("second",): 1}


# -- the dashboard and the alert rules query only what is exported ---------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
_BUILTINS = {"up": ("job", "instance")}
_TARGET_LABELS = {"job", "instance"}


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in board["panels"]:
        exprs += [t["expr"] for t in panel.get("targets", [])]
    return exprs


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def family_of(name: str, labels: dict[str, tuple[str, ...]]) -> str:
    if name in labels:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in labels:
            return name[: -len(suffix)]
    raise KeyError(name)


def referenced(expr: str) -> tuple[set[str], list[tuple[str, set[str]]], set[str]]:
    """Metric names, (metric, matcher label names) pairs and grouping label names in one expression."""
    text = _STRING.sub('""', expr)
    text = _RANGE.sub("", text)
    matchers = [(name, set(_MATCHER.findall(body))) for name, body in _SELECTOR.findall(text)]
    grouping = {lab.strip() for _, labs in _GROUPING.findall(text) for lab in labs.split(",") if lab.strip()}
    text = _GROUPING.sub(" ", _SELECTOR.sub(r"\1", text))
    names = {n for n in _IDENT.findall(text) if n not in _KEYWORDS and not re.fullmatch(r"[0-9.e]+", n)}
    return names, matchers, grouping


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_queried_metric_and_label_is_one_the_runtime_exports(source: str) -> None:
    m = Metrics()
    exported = m.names()
    labels = m.label_names()
    exprs = dashboard_exprs() if source == "dashboard" else rule_exprs()
    assert exprs
    problems = []
    for expr in exprs:
        names, matchers, grouping = referenced(expr)
        if not names:
            problems.append(f"{expr!r}: queries no metric")
        allowed_groups = set(_TARGET_LABELS) | {"le"}
        for name in names:
            if name in _BUILTINS:
                allowed_groups |= set(_BUILTINS[name])
            elif name not in exported:
                problems.append(f"{expr!r}: {name} is not exported")
            else:
                allowed_groups |= set(labels[family_of(name, labels)])
        for name, used in matchers:
            known = set(_BUILTINS.get(name, ())) | _TARGET_LABELS
            if name in exported:
                known |= set(labels[family_of(name, labels)]) | {"le"}
            if used - known:
                problems.append(f"{expr!r}: {name} has no label {sorted(used - known)}")
        if grouping - allowed_groups:
            problems.append(f"{expr!r}: groups by unknown labels {sorted(grouping - allowed_groups)}")
    assert not problems, "\n".join(problems)


def test_the_name_checker_catches_a_typo() -> None:
    names, matchers, grouping = referenced(
        'sum by (symbl) (rate(hflite_fill_total{side="buy"}[$__rate_interval]))'
    )
    assert names == {"hflite_fill_total"} and grouping == {"symbl"}
    assert "hflite_fill_total" not in Metrics().names()


def test_the_dashboard_covers_every_metric_family() -> None:
    used = set()
    for expr in dashboard_exprs():
        used |= referenced(expr)[0]
    labels = Metrics().label_names()
    families = {family_of(n, labels) for n in used if n not in _BUILTINS}
    missing = set(labels) - families - {"hflite_run_info"}
    assert not missing, f"families with no panel: {sorted(missing)}"


def test_the_dashboard_is_a_provisionable_grafana_dashboard() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 39 and board["uid"] == "hflite-overview"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert 0 <= p["gridPos"]["x"] and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and p["targets"]
    titles = {p["title"] for p in board["panels"]}
    for wanted in [
        "Equity",
        "P&L by period",
        "Drawdown",
        "Exposure",
        "Positions and open orders",
        "Orders by state",
        "Fills",
        "Slippage (bps)",
        "Risk checks by rule and outcome",
        "Halts, breakers and limits",
        "Data staleness",
        "Bar to order",
        "LLM calls",
        "LLM latency",
        "LLM fallbacks",
        "Venue latency",
        "Venue errors and disconnects",
        "Limit utilisation",
    ]:
        assert wanted in titles
    ds_var = next(v for v in board["templating"]["list"] if v["name"] == "datasource")
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    assert ds_var["current"]["value"] == source["uid"]
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hflite.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_alert_rule_has_a_severity_and_annotations() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    severities = set()
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        severities.add(rule["labels"]["severity"])
    assert severities == {"info", "warning", "critical"}
    used = set()
    for rule in rules:
        used |= referenced(rule["expr"])[0]
    for wanted in [  # the conditions the runtime's alerts cover, each watched from outside too
        "up",
        "hflite_runtime_up",
        "hflite_halted",
        "hflite_data_staleness_seconds",
        "hflite_limit_utilisation_ratio",
        "hflite_venue_connected",
        "hflite_venue_errors_total",
        "hflite_llm_fallbacks_total",
        "hflite_reconcile_differences_total",
        "hflite_bar_to_order_seconds_bucket",
        "hflite_breaker_trips_total",
    ]:
        assert wanted in used


def test_prometheus_config_scrapes_the_api_with_the_bearer_token() -> None:
    config = yaml.safe_load(PROM_CONFIG.read_text())
    assert config["rule_files"] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "hflite")
    assert job["static_configs"] == [{"targets": ["hflite:8765"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/hflite_api_token"}


# -- promtool ---------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = need_binary("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_accepts_the_alert_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    token = tmp_path / "hflite_api_token"
    token.write_text("a-token-for-the-check")
    text = PROM_CONFIG.read_text().replace("/run/secrets/hflite_api_token", str(token))
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    done = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "22 rules found" in done.stdout


RULE_TESTS = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{job="hflite", instance="h:8765"}}'
        values: '1 0 0 0 0'
      - series: 'hflite_runtime_up{{job="hflite", instance="h:8765"}}'
        values: '1 1 0 0 0'
      - series: 'hflite_halted{{job="hflite", instance="h:8765"}}'
        values: '0 1 1 1 1'
      - series: 'hflite_data_staleness_seconds{{job="hflite", instance="h:8765", symbol="AAA"}}'
        values: '10 2000 3000 4000 5000'
      - series: 'hflite_data_staleness_seconds{{job="hflite", instance="h:8765", symbol="BBB"}}'
        values: '10 20 30 40 50'
      - series: 'hflite_data_stale_after_seconds{{job="hflite", instance="h:8765"}}'
        values: '900 900 900 900 900'
      - series: 'hflite_venue_connected{{job="hflite", instance="h:8765", venue="alpaca"}}'
        values: '1 0 0 0 0'
      - series: 'hflite_limit_utilisation_ratio{{job="hflite", instance="h:8765", limit="drawdown"}}'
        values: '0.5 0.85 0.85 0.97 0.97'
      - series: 'hflite_reconcile_differences_total{{job="hflite", instance="h:8765", explained="false"}}'
        values: '0 0 1 1 1'
      - series: 'hflite_venue_errors_total{{{h}, venue="alpaca", error="timeout"}}'
        values: '0+5x10'
      - series: 'hflite_venue_request_seconds_count{{{h}, venue="alpaca", op="submit"}}'
        values: '0+10x10'
    promql_expr_test:
{cases}
"""


def alert_case(name: str, at: str, state: str, severity: str, **labels: str) -> str:
    all_labels = {"alertname": name, "alertstate": state, "severity": severity, "job": "hflite"}
    all_labels |= {"instance": "h:8765", **labels}
    text = ", ".join(f'{k}="{v}"' for k, v in all_labels.items())
    return (
        f"      - expr: 'ALERTS{{alertname=\"{name}\"}}'\n"
        f"        eval_time: {at}\n"
        f"        exp_samples:\n"
        f"          - labels: 'ALERTS{{{text}}}'\n"
        f"            value: 1\n"
    )


def test_the_alert_rules_fire_on_the_conditions_they_name(tmp_path: Path) -> None:
    cases = [
        alert_case("HfliteHalted", "1m", "firing", "critical"),
        alert_case("HfliteRuntimeDown", "2m", "pending", "critical"),
        alert_case("HfliteRuntimeDown", "3m", "firing", "critical"),
        alert_case("HfliteScrapeDown", "3m", "firing", "critical"),
        alert_case("HfliteDataStale", "1m", "pending", "warning", symbol="AAA"),  # BBB is fresh
        alert_case("HfliteDataStale", "3m", "firing", "warning", symbol="AAA"),
        alert_case("HfliteVenueDisconnected", "2m", "firing", "critical", venue="alpaca"),
        alert_case("HfliteDrawdownLimitHigh", "2m", "firing", "warning", limit="drawdown"),
        alert_case("HfliteDrawdownLimitCritical", "3m", "firing", "critical", limit="drawdown"),
        alert_case("HfliteReconcileDifference", "2m", "firing", "critical", explained="false"),
        alert_case("HfliteVenueErrorRate", "10m", "firing", "warning", venue="alpaca"),
        "      - expr: 'ALERTS{alertname=\"HfliteDrawdownLimitCritical\"}'\n        eval_time: 2m\n"
        "        exp_samples: []\n",
    ]
    spec = tmp_path / "rules_test.yml"
    spec.write_text(
        RULE_TESTS.format(alerts=ALERTS, cases="".join(cases), h='job="hflite", instance="h:8765"')
    )
    done = promtool("test", "rules", str(spec))
    assert done.returncode == 0, done.stdout + done.stderr


# -- a real Prometheus (slow) -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {srv.token}".encode()):
            srv.refused += 1
            self.send_response(401)
            self.end_headers()
            return
        if self.path.split("?")[0] != "/metrics":
            self.send_response(404)
            self.end_headers()
            return
        body, content_type = srv.metrics.render()
        srv.served += 1
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        return


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, metrics: Metrics, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.metrics = metrics
        self.token = token
        self.served = 0
        self.refused = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def served() -> Iterator[tuple[_MetricsServer, Metrics]]:
    metrics = Metrics("slow-run", stale_after_s=60)
    server = _MetricsServer(metrics, secrets.token_urlsafe(24))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, metrics
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _feed_everything(m: Metrics) -> None:
    """One event of every mapped kind and a full book: every dashboard panel has data."""
    for e in [
        ev("run.start", venue="paper", feed="recorded", symbols=["AAA"], journal="j"),
        ev("fill", symbol="AAA", side="buy", slippage_bps=1.5),
        ev("order", order_id="o1", symbol="AAA", status="filled"),
        ev("risk.verdict", symbol="AAA", status="approved", rule=""),
        ev("risk.halt", reason="drawdown 16% reached the 15% limit"),
        ev("risk.breaker", symbol="", detail="market down 7%"),
        ev("risk.limit", rule="daily_loss", detail=""),
        ev("risk.command", action="pause", reason="", source="api"),
        ev("stop_out", symbol="AAA", qty=1, price=1.0, order_id="o2"),
        ev("reconcile.diff", key="AAA", explained=True, resolution="fill"),
        ev("venue.request", venue="paper", op="submit", latency_s=0.01, error="timeout"),
        ev("venue.disconnect", venue="paper", why="test"),
        ev("venue.reconnect", venue="paper"),
        ev("feed.stale", symbol="AAA", last_bar="", late_s=1.0),
        ev("llm.call", backend="ollama", latency_s=0.5, ok=True),
        ev("llm.fallback", backend="ollama", why="timeout"),
        ev("bar", bar_to_order_s=0.003),
    ]:
        m(e)
    m.set_runtime_up(True)
    book = {**BOOK, "halted": "drawdown halt", "last_bar": {"AAA": "2024-01-02T15:00:00+00:00"}}
    m.on_book(book, RISK)


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


@pytest.mark.slow
def test_a_real_prometheus_reads_equity_back_through_its_query_api(
    tmp_path: Path, served: tuple[_MetricsServer, Metrics]
) -> None:
    server, metrics = served
    metrics.set_runtime_up(True)
    metrics.on_book(BOOK, RISK)
    with start_prometheus(tmp_path, [server.target], server.token) as prom:
        result = prom.wait_for('hflite_equity{job="hflite"}', timeout=30)
        assert float(result[0]["value"][1]) == 101_234.5
        assert result[0]["metric"]["instance"] == server.target
        metrics.on_book({**BOOK, "equity": 99_000.25}, RISK)
        prom.wait_for(
            "hflite_equity", timeout=30, until=lambda r: bool(r) and float(r[0]["value"][1]) == 99_000.25
        )
        pnl = {r["metric"]["period"]: float(r["value"][1]) for r in prom.query("hflite_pnl")}
        assert pnl == {"day": 12.5, "week": -3.0, "month": 40.0, "total": 210.0}
    assert server.served >= 2 and server.refused == 0


@pytest.mark.slow
def test_a_prometheus_with_the_wrong_token_is_refused(
    tmp_path: Path, served: tuple[_MetricsServer, Metrics]
) -> None:
    server, metrics = served
    metrics.on_book(BOOK, RISK)
    with start_prometheus(tmp_path, [server.target], "not-the-token") as prom:
        result = prom.wait_for('up{job="hflite"}', timeout=30)
        assert float(result[0]["value"][1]) == 0
        (target,) = prom.targets()
        assert "401" in target["lastError"]
        assert prom.query("hflite_equity") == []
    assert server.refused >= 1 and server.served == 0


@pytest.mark.slow
def test_every_dashboard_panel_has_data_and_the_rules_evaluate(
    tmp_path: Path, served: tuple[_MetricsServer, Metrics]
) -> None:
    server, metrics = served
    _feed_everything(metrics)
    with start_prometheus(tmp_path, [server.target], server.token, rule_files=[ALERTS]) as prom:
        prom.wait_for("count_over_time(hflite_equity[1m]) >= 3", timeout=30)
        empty = [e for e in dashboard_exprs() if not prom.query(_grafana_to_promql(e))]
        assert not empty, f"dashboard queries with no data: {empty}"
        firing = prom.wait_for('ALERTS{alertname="HfliteHalted", alertstate="firing"}', timeout=30)
        assert firing[0]["metric"]["severity"] == "critical"
        stale = prom.wait_for('ALERTS{alertname="HfliteDataStale"}', timeout=30)
        assert {r["metric"]["symbol"] for r in stale} == {"AAA"}
        deadline = time.monotonic() + 30
        while True:  # each group evaluates on its own tick: wait until all have run once
            groups = prom.api("/api/v1/rules")["groups"]
            health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            if set(health.values()) == {"ok"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(health) == 22 and set(health.values()) == {"ok"}, health
