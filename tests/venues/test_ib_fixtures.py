"""The fake TWS speaks the documented wire format: every message it sends in a session of the real
ib_async client (handshake, connect sync, an order placed, filled in part, cancelled, rejected,
positions, account summary, executions, a snapshot quote) has the field count and field types of the
fixture in ``tests/fixtures/venues/ib/`` that documents it (each fixture names its TWS API page)."""

from __future__ import annotations

import json
import socket
import struct
from collections import defaultdict
from pathlib import Path

import pytest

from hflite.domain.instrument import SAMPLE_INSTRUMENTS
from hflite.domain.order import Order, OrderType, Side
from hflite.execution.venues.base import VenueEventKind
from hflite.execution.venues.fakebroker import FakeBroker
from hflite.execution.venues.fakes.tws import SERVER_VERSION, TwsServer
from hflite.execution.venues.ib import IbVenue
from tests.conftest import make_settings
from tests.venues.contract import T0, wait_until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "venues" / "ib"
ACCOUNT = "DU1357913"


def _fixtures() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("**/*.json"))}


def _parses(value: str, kind: str) -> bool:
    if value == "":
        return True  # TWS sends unset numbers as empty fields
    try:
        {"int": int, "float": float, "str": str}[kind](value)
    except ValueError:
        return False
    return True


def test_every_fixture_names_its_doc_page_and_its_example_has_its_shape():
    for name, fx in _fixtures().items():
        assert fx["_doc"].startswith("https://interactivebrokers.github.io/tws-api/"), name
        assert fx["server_version"] == SERVER_VERSION
        if fx.get("example") is not None:
            assert len(fx["example"]) == len(fx["fields"]), name
            assert all(_parses(v, t) for v, (_, t) in zip(fx["example"], fx["fields"], strict=True)), name


@pytest.fixture
def session(sample_store) -> dict[int, list[list[str]]]:
    """What the fake sent, by message id, during one session of the real client."""
    settings = make_settings(
        sample_store, run={"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"}
    )
    seen: dict[int, list[list[str]]] = defaultdict(list)
    with TwsServer(FakeBroker.from_settings(settings, sample_store), accounts=(ACCOUNT,)) as tws:
        seen[-1].append(_handshake(tws.port))
        venue = IbVenue("ib", tws.url, client_id=5, account=ACCOUNT, timeout_s=2.0,
                        instruments={"SPY": SAMPLE_INSTRUMENTS["SPY"]})  # fmt: skip
        interpret = venue._ib.client.decoder.interpret

        def record(fields: list[str]) -> None:
            seen[int(fields[0])].append(list(fields))
            interpret(fields)

        venue._ib.client.decoder.interpret = record  # type: ignore[method-assign]
        try:
            venue.connect()
            order = Order("fx1.trend-SPY-e1", "SPY", Side.BUY, OrderType.LIMIT, 10.0, T0, 200.0)
            venue.submit(order)
            wait_until(lambda: any(e.kind is VenueEventKind.ACCEPTED for e in venue.pending("SPY")))
            tws.execute(order.id, 4.0, 200.0, 1.0)
            wait_until(lambda: any(e.kind is VenueEventKind.FILLED for e in venue.pending("SPY")))
            venue.cancel(order, T0)
            wait_until(lambda: any(e.kind is VenueEventKind.CANCELLED for e in venue.pending("SPY")))
            tws.reject_next("insufficient buying power")
            venue.submit(Order("fx2.trend-SPY-e2", "SPY", Side.BUY, OrderType.LIMIT, 10.0, T0, 200.0))
            wait_until(lambda: any(e.kind is VenueEventKind.REJECTED for e in venue.pending("SPY")))
            venue.snapshot([order.id])
            venue.clock_skew_s()
            bars = tws.broker.md.bars["SPY"]  # a quote needs the fake's market at a bar of SPY
            tws.broker.advance_to(int(bars.ts[min(bars.n - 1, bars.first_live + 5)]))
            assert venue.quote("SPY") is not None
        finally:
            venue.close()
    return seen


def _handshake(port: int) -> list[str]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        hello = b"v157..178"
        s.sendall(b"API\0" + struct.pack(">I", len(hello)) + hello)
        size = struct.unpack(">I", _read(s, 4))[0]
        fields = _read(s, size).decode().split("\0")
    return fields[:-1]


def _read(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "the fake closed the socket"
        data += chunk
    return data


def test_every_message_the_fake_sends_has_its_documented_shape(session):
    for name, fx in _fixtures().items():
        msg_id = -1 if fx["msg_id"] is None else fx["msg_id"]
        sent = session.get(msg_id, [])
        assert sent, f"the session never produced {name}"
        count = fx.get("field_count", len(fx["fields"]))
        for fields in sent:
            assert len(fields) == count, (name, fields)
            for value, (field, kind) in zip(fields, fx["fields"], strict=False):
                assert _parses(value, kind), (name, field, value)


def test_serve_listens_until_told_to_stop_and_answers_the_handshake(sample_store, capsys):
    import threading

    from hflite.execution.venues.fakes.tws import serve

    settings = make_settings(
        sample_store, run={"symbols": ["SPY"], "start": "2019-01-02", "end": "2019-12-31"}
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=serve, args=(settings, port), kwargs={"store": sample_store, "ready": ready, "stop": stop}
    )
    thread.start()
    try:
        assert ready.wait(10)
        assert _handshake(port)[0] == str(SERVER_VERSION)
    finally:
        stop.set()
        thread.join(10)
    assert f"listening on tcp://127.0.0.1:{port}" in capsys.readouterr().out
