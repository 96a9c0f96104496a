"""The control API over a real run's journal: every route, its security, its answers while no
runtime runs, bad input, and schemathesis over the OpenAPI schema (no 5xx, no schema violation)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from hflite.config import ApiConfig
from hflite.engine.live import trade
from hflite.ops.api import ApiError, check_bind, create_app, read_token
from hflite.ops.metrics import Metrics
from hflite.ops.state import RunView
from tests.test_trading_run import _paper

TOKEN = "api-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def journal(sample_store, tmp_path_factory) -> Path:
    """A finished paper run on the sample (breakout on QQQ, XLE, ETH-USD, 2018-2022)."""
    path = tmp_path_factory.mktemp("api") / "paper.sqlite"
    settings = _paper(sample_store)
    out = asyncio.run(trade(settings, sample_store, feed="recorded", journal_path=path))
    assert out.result is not None and len(out.result.trades) > 20
    return path


@pytest.fixture
def client(journal: Path, tmp_path: Path) -> TestClient:
    copy = tmp_path / "j.sqlite"  # commands write to it: each test gets its own copy
    src, dst = sqlite3.connect(journal), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    cfg = ApiConfig(control_per_minute=1000, read_per_second=10_000)
    app = create_app(RunView(copy), TOKEN, config=cfg, metrics=Metrics("paper"))
    return TestClient(app)


def test_every_route_but_health_needs_the_token(client: TestClient) -> None:
    routes = ["/status", "/positions", "/orders", "/trades", "/equity", "/emergency/risk_check",
              "/decisions/x", "/commands", "/alerts", "/metrics"]  # fmt: skip
    for route in routes:
        assert client.get(route).status_code == 401, route
        wrong = client.get(route, headers={"Authorization": "Bearer not-the-token-at-all-xx"})
        assert wrong.status_code == 401, route
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        assert client.get(route, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    for route in ("/emergency/kill", "/emergency/pause", "/emergency/close_all", "/resume"):
        assert client.post(route, json={"confirm": True}).status_code == 401
    assert client.get("/health").status_code == 200


def test_status_says_the_runtime_is_stopped_and_shows_the_book(client: TestClient) -> None:
    s = client.get("/status", headers=AUTH).json()
    assert s["runtime"] == "stopped" and s["live"] is False
    assert s["run_id"] == "paper" and s["venue"] == "paper"
    assert s["equity"] > 0 and s["bar_times"] > 1000
    assert s["last_decided"].startswith("2022-12-")


def test_reads_agree_with_the_journal(client: TestClient, journal: Path) -> None:
    eq = client.get("/equity?last=0", headers=AUTH).json()
    status = client.get("/status", headers=AUTH).json()
    assert len(eq) == status["bar_times"]
    assert eq[-1]["equity"] == pytest.approx(status["equity"])
    trades = client.get("/trades?last=0", headers=AUTH).json()
    assert len(trades) > 20 and {t["direction"] for t in trades} == {"long", "short"}
    assert all(t["net_pnl"] == pytest.approx(t["pnl"] - t["fees"]) for t in trades)
    orders = client.get("/orders?last=5", headers=AUTH).json()
    assert len(orders) == 5 and all(o["id"].startswith("paper.breakout-") for o in orders)
    positions = client.get("/positions", headers=AUTH).json()
    for p in positions:
        assert p["value"] == pytest.approx(p["qty"] * p["last"])


def test_a_decision_is_found_by_intent_or_order_id(client: TestClient) -> None:
    order = next(o for o in client.get("/orders?last=0", headers=AUTH).json() if o["decision_id"])
    by_order = client.get(f"/decisions/{order['id']}", headers=AUTH).json()
    by_intent = client.get(f"/decisions/{order['decision_id']}", headers=AUTH).json()
    assert by_order["id"] == by_intent["id"] == order["decision_id"]
    assert by_intent["source"] == "journal"
    assert by_intent["verdict"]["status"] in ("approved", "resized")
    assert any(o["id"] == order["id"] for o in by_intent["orders"])
    assert by_intent["verdict"]["checks"], "every check with its value and limit"
    missing = client.get("/decisions/no-such-decision", headers=AUTH)
    assert missing.status_code == 404 and "no-such-decision" in missing.json()["detail"]


def test_risk_check_lists_every_limit_with_its_utilisation(client: TestClient) -> None:
    rc = client.get("/emergency/risk_check", headers=AUTH).json()
    names = {r["name"] for r in rc["limits"]}
    assert {"drawdown", "gross_exposure", "net_exposure", "open_positions", "daily_loss"} <= names
    dd = next(r for r in rc["limits"] if r["name"] == "drawdown")
    assert dd["utilisation"] == pytest.approx(dd["value"] / dd["limit"])
    assert rc["mode"] == "running" and rc["runtime"] == "stopped"
    assert rc["verdicts"]["approved"] > 0


def test_kill_and_close_all_need_confirm_and_are_journaled_with_their_source(client: TestClient) -> None:
    for route in ("/emergency/kill", "/emergency/close_all"):
        for body in ({"reason": "test"}, {"confirm": False}, None):
            r = client.post(route, json=body, headers=AUTH)
            assert r.status_code == 422 and "needs a JSON body with confirm: true" in r.json()["detail"]
    r = client.post("/emergency/kill", json={"reason": "venue outage", "confirm": True}, headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["live"] is False and body["runtime"] == "stopped"
    assert "next start" in body["message"], "not running: it says so instead of pretending"
    cmds = client.get("/commands", headers=AUTH).json()
    want = {"seq": body["seq"], "queued": 0, "action": "kill", "reason": "venue outage", "source": "api",
            "applied_at": None, "pending": True}  # fmt: skip
    assert cmds[-1] | {"queued": 0} == want
    assert client.get("/status", headers=AUTH).json()["pending_commands"] == 1
    assert client.post("/emergency/pause", headers=AUTH).status_code == 200  # no body: no reason
    assert client.post("/resume", json={"reason": "ok"}, headers=AUTH).status_code == 200


def test_bad_requests_get_clear_answers(client: TestClient) -> None:
    bad = client.post(
        "/emergency/pause", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad.status_code == 422 and bad.json()["detail"].startswith("bad request")
    extra = client.post("/emergency/pause", json={"reason": "x", "force": 1}, headers=AUTH)
    assert extra.status_code == 422 and "force" in extra.json()["detail"]
    assert client.get("/orders?last=-1", headers=AUTH).status_code == 422
    assert client.post("/emergency/pause", json={"reason": "x" * 501}, headers=AUTH).status_code == 422


def test_control_routes_are_rate_limited(journal: Path, tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    path.write_bytes(journal.read_bytes())
    app = create_app(RunView(path), TOKEN, config=ApiConfig(control_per_minute=3))
    c = TestClient(app)
    codes = [c.post("/emergency/pause", headers=AUTH).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = c.post("/resume", headers=AUTH)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert c.get("/status", headers=AUTH).status_code == 200, "reads have their own budget"


def test_an_api_with_no_journal_says_no_runtime_ran(tmp_path: Path) -> None:
    c = TestClient(create_app(RunView(tmp_path / "none.sqlite"), TOKEN))
    r = c.get("/status", headers=AUTH)
    assert r.status_code == 200 and r.json()["runtime"] == "never ran"
    r = c.post("/emergency/pause", headers=AUTH)
    assert r.status_code == 503 and "no runtime has run" in r.json()["detail"]
    h = c.get("/health?ready=true")
    assert h.status_code == 503 and h.json()["ready"] is False and h.json()["alive"] is True
    assert c.get("/orders", headers=AUTH).status_code == 503


def test_metrics_are_read_from_the_journal_when_no_runtime_feeds_them(client: TestClient) -> None:
    text = client.get("/metrics", headers=AUTH).text
    status = client.get("/status", headers=AUTH).json()
    line = next(x for x in text.splitlines() if x.startswith("hflite_equity "))
    assert float(line.split()[1]) == pytest.approx(status["equity"])
    assert "hflite_runtime_up 0.0" in text


def test_binding_and_token_rules() -> None:
    assert check_bind("127.0.0.1", tls=False, insecure_remote=False) is None
    assert check_bind("::1", tls=False, insecure_remote=False) is None
    assert check_bind("0.0.0.0", tls=True, insecure_remote=False) is None  # noqa: S104
    with pytest.raises(ApiError, match="non-loopback address 0.0.0.0 without TLS"):
        check_bind("0.0.0.0", tls=False, insecure_remote=False)  # noqa: S104
    assert "WARNING" in check_bind("192.168.1.5", tls=False, insecure_remote=True)
    with pytest.raises(ApiError, match="set HFLITE_API_TOKEN in .env"):
        read_token("HFLITE_API_TOKEN", {})
    with pytest.raises(ApiError, match="too short"):
        read_token("HFLITE_API_TOKEN", {"HFLITE_API_TOKEN": "short"})


# -- schemathesis: the OpenAPI schema against the app, on a real journal ------------------------------
def test_the_api_honours_its_openapi_schema(client: TestClient) -> None:
    """Every operation, with data hypothesis generates from the schema: no 5xx, and every answer
    conforms to the schema (status code documented, body valid, content type right)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) >= 14
    for op in ops:
        _fuzz(op)


def _fuzz(op) -> None:
    # /health?ready=true answers 503 by design while no runtime is live (documented in the schema)
    excluded = [not_a_server_error] if op.path == "/health" else []

    @given(case=op.as_strategy())
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case) -> None:
        case.call_and_validate(headers=AUTH, excluded_checks=excluded)

    check()


def test_a_taken_port_is_one_clear_error_and_a_free_one_serves(tmp_path: Path) -> None:
    import socket

    import httpx

    from hflite.ops.api import ApiServer

    app = create_app(RunView(tmp_path / "none.sqlite"), TOKEN)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ApiError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            ApiServer(app, "127.0.0.1", port).start()
    server = ApiServer(app, "127.0.0.1", 0)
    url = server.start()
    try:
        assert httpx.get(f"{url}/health").json()["runtime"] == "never ran"
    finally:
        server.stop()


def test_the_docs_are_open_on_loopback_only(tmp_path: Path) -> None:
    local = TestClient(create_app(RunView(tmp_path / "j.sqlite"), TOKEN))
    assert local.get("/openapi.json").status_code == 200 and local.get("/docs").status_code == 200
    schema = local.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert schema["paths"]["/status"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in schema["paths"]["/health"]["get"]
    remote = TestClient(create_app(RunView(tmp_path / "j.sqlite"), TOKEN, docs_open=False))
    assert remote.get("/openapi.json").status_code == 401 and remote.get("/docs").status_code == 401
    assert remote.get("/openapi.json", headers=AUTH).status_code == 200
    assert remote.get("/health").status_code == 200


def _partial_journal(path: Path) -> None:
    """What a starting runtime has written when its first tables exist and the rest not yet."""
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE orders (id TEXT PRIMARY KEY, symbol TEXT, status TEXT, body TEXT);"
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, kind TEXT, ref TEXT, body TEXT);"
    )
    db.close()


@pytest.mark.parametrize("content", [b"", b"this is not a database at all", "partial"])
def test_a_journal_being_created_or_not_a_journal_is_said_not_a_500(tmp_path: Path, content) -> None:
    path = tmp_path / "j.sqlite"
    if content == "partial":
        _partial_journal(path)
    else:
        path.write_bytes(content)  # a starting runtime has created the file, not its tables yet (or junk)
    c = TestClient(create_app(RunView(path), TOKEN))
    s = c.get("/status", headers=AUTH)
    assert s.status_code == 200 and s.json()["bar_ts"] is None and s.json()["live"] is False
    r = c.get("/equity", headers=AUTH)
    assert r.status_code == 503 and "cannot be read yet" in r.json()["detail"]
    assert c.get("/health").status_code == 200
